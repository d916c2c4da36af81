// The Node.js function of idem's tests, run by the official runtime
// interface client (aws-lambda-ric) as a Lambda function is: its event
// says what to do.
//
//	{"throw": "message"}  throws an Error with that message
//	{"sleep": ms}         waits ms milliseconds, then answers
//	anything else         is echoed, with the invocation's context
export const handler = async (event, context) => {
  if (event.throw) {
    throw new Error(event.throw);
  }
  if (event.sleep) {
    await new Promise((resolve) => setTimeout(resolve, event.sleep));
  }
  return {
    echo: event,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    remainingMs: context.getRemainingTimeInMillis(),
  };
};
