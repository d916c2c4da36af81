package function

// Error types idem itself reports, in Lambda's "Category.Reason" spelling so
// that permanentErrorTypes, logs and on-failure records read as they would
// on AWS. A function's own errors use its error's type name instead (Go's
// convention in aws-lambda-go: errorString, ValidationError).
const (
	// TypeTimeout: the function did not answer before its deadline. Lambda
	// reports the same type for "Task timed out after N.NN seconds".
	TypeTimeout = "Function.Timeout"
	// TypeUnreachable: the function could not be reached, or the connection
	// broke before a whole response arrived. The code may or may not have
	// run.
	TypeUnreachable = "Function.Unreachable"
	// TypeInvalidResponse: the function answered with something that is not
	// a JSON object or null, so it cannot be read as a batch response.
	TypeInvalidResponse = "Function.InvalidResponse"
	// TypeResponseTooLarge: the response exceeded MaxResponseSize, Lambda's
	// limit for a synchronous invocation.
	TypeResponseTooLarge = "Function.ResponseSizeTooLarge"
	// TypePanic: an in-process handler panicked.
	TypePanic = "Runtime.Panic"
)

// MaxResponseSize is the largest response a function may return: Lambda's
// 6 MB synchronous payload limit, so a function that works on idem also
// works on AWS.
const MaxResponseSize = 6 << 20
