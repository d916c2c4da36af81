// Package invoke runs functions invoked directly, as AWS Lambda's Invoke API
// does: synchronously (RequestResponse: the caller waits for the result)
// or asynchronously (Event: the event is queued and the caller gets 202),
// for every kind of function (in-process Go, HTTP, process) through
// function.PayloadInvoker. Service.ServeHTTP serves the Invoke API,
// POST /2015-03-31/functions/{name}/invocations, so that the AWS CLI and
// SDKs invoke functions on idem as they would on Lambda.
//
// # Delivery semantics
//
// A synchronous invocation runs the function once; idem does not retry it
// (the caller does, as with Lambda).
//
// An asynchronous event is appended, with one synced write, to an embedded
// stream of the function's own (idem:invoke:<function>, in the data
// directory) before the 202 answer: an event that was answered 202 survives
// any crash, kill -9 included. Events then run concurrently, each at least
// once: a crash after the function ran but before its completion was
// committed runs it again after restart. A failed run is retried
// maximumRetryAttempts times (0 to 2) after a backoff; a permanent error
// type skips the remaining retries; an event older than maximumEventAge is
// not run again. An event that is given up goes to the onFailure stream as
// Lambda's asynchronous failure record followed by the event itself, in the
// same atomic write that marks the event done, so it is neither lost nor
// recorded twice.
//
// A failed attempt, with when the next one is due, is committed before the
// next attempt can start (here or after a restart), so a restart neither
// resets the retry budget nor hurries the backoff, and an attempt whose
// failure was committed never runs again. What a crash can repeat is the
// attempt in flight: one that was running, or had failed and not yet been
// committed (the time of one synced write), runs again after restart and
// counts as one attempt; so does a run that succeeded before its completion was
// committed, as with any at-least-once delivery. A keyed event's repeated
// run is still refused by its key's claim once the first one completed.
//
// # Idempotency
//
// An invocation with an idempotency key (the Idempotency-Key header, or
// the function's idempotency.key expression over the payload) is claimed in
// the store (store.Claims) under the key, with the payload's SHA-256, before
// the function runs. Of concurrent or repeated invocations with one key,
// exactly one runs; the others get its result (synchronous callers wait for
// it, up to the function's timeout, unless they send Idempotency-Wait:
// false) without running the function. A result is kept for the
// function's idempotency.retention. A run that fails releases its claim,
// so the next repeat runs again. A repeat with another payload is refused.
//
// # Keyed asynchronous events
//
// An Event with a key is deduplicated at enqueue time by a reservation in
// the store (store.Claims, a record of its own beside the key's run
// record), so that a restarted process, and every process sharing a
// PostgreSQL or Redis store, sees it: a repeat of an event that is queued
// or running is answered 202 with Idempotent-Replayed and not queued; a
// repeat with another payload is refused (422) at once. A key that
// completed is answered the same way. A key whose run is in progress
// elsewhere (a synchronous invocation) is not a reason to drop the event:
// it is queued, and when it runs it waits for that run's outcome, skipped
// if it completed, run if it failed. So a 202 always means that the event
// runs, or reaches the on-failure destination, or that the key completed.
//
// The queue lives in the data directory and the claims in the store: with
// PostgreSQL or Redis they are two databases, and even with the embedded
// store, where both are in one Pebble database, a claims record cannot be
// part of the store.Write that appends to a stream. So the reservation and
// the event are not one write; they are ordered so that every crash leaves
// one of them standing for the key:
//
//  1. The reservation is claimed with a short lease (10s). A repeat that
//     finds it so waits for it.
//  2. The event is appended, carrying the reservation's fencing token.
//  3. The reservation is completed ("queued") for the event's life
//     (maximumEventAge plus the function's lease). From then on repeats
//     are replays.
//  4. When the event is done (its outcome committed), the reservation is
//     ended, and the next repeat looks the key up again.
//
// A crash between 1 and 2 leaves a reservation without an event: it lapses
// after its short lease, and the repeat that waited queues the event. A
// crash between 2 and 3 (or a failed step 3) leaves an event whose
// reservation lapses: a repeat then queues a second event, and of the two,
// only the one whose token the reservation holds runs; the other is
// skipped when dispatched. An event queued in a process that never runs
// again (its data directory lost) holds its key until the reservation
// expires.
package invoke
