package httpfn

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/idem-run/idem/function"
)

func TestInvokePayload(t *testing.T) {
	var hdr http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdr = r.Header.Clone()
		body, _ := io.ReadAll(r.Body)
		switch string(body) {
		case `"error"`:
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"errorType":"ValidationError","errorMessage":"bad"}`)
		case `"lambda-error"`:
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			io.WriteString(w, `{"errorType":"Oops","errorMessage":"it broke"}`)
		case `"plain-500"`:
			w.WriteHeader(http.StatusInternalServerError)
		case `"big"`:
			w.Write(make([]byte, function.MaxResponseSize+1))
		case `"slow"`:
			time.Sleep(200 * time.Millisecond)
		default:
			w.Write(append([]byte("echo "), body...))
		}
	}))
	defer srv.Close()
	f, err := New(srv.URL, Timeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out, err := f.InvokePayload(ctx, []byte(`{"a":1}`), function.InvokeMeta{RequestID: "req-1", Function: "fn", ClientContext: []byte(`{"custom":{}}`)})
	if err != nil || string(out) != `echo {"a":1}` {
		t.Fatalf("InvokePayload = %q, %v", out, err)
	}
	if hdr.Get("Lambda-Runtime-Aws-Request-Id") != "req-1" || !strings.HasSuffix(hdr.Get("Lambda-Runtime-Invoked-Function-Arn"), ":function:fn") ||
		hdr.Get("Lambda-Runtime-Client-Context") != `{"custom":{}}` || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("headers = %v", hdr)
	}
	for payload, want := range map[string]string{`"error"`: "ValidationError", `"lambda-error"`: "Oops", `"plain-500"`: "HTTP.500", `"big"`: function.TypeResponseTooLarge} {
		_, err := f.InvokePayload(ctx, []byte(payload), function.InvokeMeta{})
		var fe *function.Error
		if !errors.As(err, &fe) || fe.Type != want {
			t.Errorf("%s: %v, want a %s function error", payload, err, want)
		}
	}
	_, err = f.InvokePayload(ctx, []byte(`"slow"`), function.InvokeMeta{Deadline: time.Now().Add(50 * time.Millisecond)})
	var fe *function.Error
	if !errors.As(err, &fe) || fe.Type != function.TypeTimeout {
		t.Errorf("slow: %v, want %s", err, function.TypeTimeout)
	}
}
