package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/smithy-go"

	"github.com/idem-run/idem"
	"github.com/idem-run/idem/server"
)

// TestForbiddenInvokeWithSDK (issue 11, item 6): aws-sdk-go-v2's Lambda
// client reports a refused Invoke as AccessDeniedException with idem's
// text, not as an UnknownError or an empty message.
func TestForbiddenInvokeWithSDK(t *testing.T) {
	addr := serve(t, `
auth: {tokens: [`+token+`]}
functions: [{name: upper}]
`, nil, server.WithInvokeHandler("upper", idem.InvokeFunc(upper)))
	_, err := client(addr, "not-the-token-at-all").Invoke(context.Background(),
		&lambda.InvokeInput{FunctionName: aws.String("upper"), Payload: []byte(`"abc"`)})
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("Invoke with a wrong token: %v, want an API error", err)
	}
	if ae.ErrorCode() != "AccessDeniedException" || !strings.Contains(ae.ErrorMessage(), "requires a token of auth.tokens") {
		t.Errorf("Invoke with a wrong token: code %q, message %q; want AccessDeniedException with idem's text", ae.ErrorCode(), ae.ErrorMessage())
	}
}

// TestErrorsInAWSShape (issue 11, item 6): every error of idem's own API is
// answered as AWS's JSON APIs answer theirs (X-Amzn-ErrorType, and Type,
// message and Message in the body), with the error field idem's clients
// read kept.
func TestErrorsInAWSShape(t *testing.T) {
	addr := serve(t, `
auth: {tokens: [`+token+`]}
streams: [{name: events}]
functions: [{name: upper}]
`, nil, server.WithInvokeHandler("upper", idem.InvokeFunc(upper)))
	for _, tc := range []struct {
		name, method, path, auth, body string
		code                           int
		errType, typ, text             string
	}{
		{"no token", "GET", "/v1/status", "", "", 403, "AccessDeniedException", "User", "requires a token"},
		{"a queue", "POST", "/v1/streams/idem:invoke:upper/records", "Bearer " + token, `{"records":[{"partitionKey":"k","data":"d"}]}`,
			403, "AccessDeniedException", "User", "event queue of the Invoke API"},
		{"not JSON", "POST", "/v1/streams/events/records", "Bearer " + token, `{`, 400, "InvalidRequestContentException", "User", "request body"},
		{"no records", "POST", "/v1/streams/events/records", "Bearer " + token, `{"records":[]}`, 400, "InvalidParameterValueException", "User", "at least one record"},
		{"no shard", "GET", "/v1/streams/events/records", "Bearer " + token, "", 400, "InvalidParameterValueException", "User", "shard: required"},
		{"no state", "GET", "/v1/state/s/k", "Bearer " + token, "", 404, "ResourceNotFoundException", "User", "not found"},
		{"invoke API", "POST", "/2015-03-31/functions/absent/invocations", "Bearer " + token, `{}`, 404, "ResourceNotFoundException", "User", "Function not found"},
	} {
		code, b, header := callHeader(t, tc.method, "http://"+addr+tc.path, tc.auth, tc.body)
		var body map[string]string
		if err := json.Unmarshal([]byte(b), &body); err != nil {
			t.Errorf("%s: body %s: %v", tc.name, b, err)
			continue
		}
		if code != tc.code || header.Get("X-Amzn-ErrorType") != tc.errType || body["Type"] != tc.typ ||
			!strings.Contains(body["message"], tc.text) || body["Message"] != body["message"] || body["error"] != body["message"] {
			t.Errorf("%s: %d X-Amzn-ErrorType %q %s; want %d %s, Type %s, and message, Message and error holding %q",
				tc.name, code, header.Get("X-Amzn-ErrorType"), b, tc.code, tc.errType, tc.typ, tc.text)
		}
	}
}
