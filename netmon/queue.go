package netmon

import (
	"time"
)

// queued is a node of the intrusive FIFO of keys (one allocation per key,
// O(1) removal from the middle when a change is undone).
type queued struct {
	k          key
	at         time.Time
	prev, next *queued
}

type queue struct {
	head, tail *queued
	n          int
}

func (q *queue) Len() int { return q.n }

func (q *queue) pushBack(e *queued) *queued {
	e.prev, e.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = e
	} else {
		q.head = e
	}
	q.tail = e
	q.n++
	return e
}

func (q *queue) pushFront(e *queued) *queued {
	e.prev, e.next = nil, q.head
	if q.head != nil {
		q.head.prev = e
	} else {
		q.tail = e
	}
	q.head = e
	q.n++
	return e
}

func (q *queue) remove(e *queued) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		q.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		q.tail = e.prev
	}
	e.prev, e.next = nil, nil
	q.n--
}
