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
// recorded twice. The attempts made, and when the next one is due, are
// committed too, so a restart neither resets the retry budget nor hurries
// the backoff.
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
// Asynchronous events with a key are deduplicated twice: at enqueue time (a
// repeat of an event that is queued, running or completed is answered 202
// and not queued), and again by the claim when the event runs.
package invoke
