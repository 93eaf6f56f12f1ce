package ddns

import "github.com/prometheus/client_golang/prometheus"

// UpdatesCounter and ConflictsCounter give tests the Updater's counters.
func UpdatesCounter(u *Updater) *prometheus.CounterVec { return u.m.updates }

func ConflictsCounter(u *Updater) prometheus.Counter { return u.m.conflicts }
