// Command raw is a custom Lambda runtime that speaks the Runtime API with
// net/http alone, as runtimes in other languages do. It registers an
// extension for SHUTDOWN and prints the event it gets. RAW_MODE=init-error
// makes it report an initialization error and exit. An event whose record
// data is "big" gets a 7 MB response; "typed-header" gets an error whose
// body is not JSON and whose type is in the header only.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

var base = "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API")

func post(path, typ string, body []byte) {
	req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(body))
	if typ != "" {
		req.Header.Set("Lambda-Runtime-Function-Error-Type", typ)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "post:", err)
		os.Exit(1)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
}

func main() {
	if os.Getenv("RAW_MODE") == "init-error" {
		post("/2018-06-01/runtime/init/error", "Runtime.ConfigError",
			[]byte(`{"errorMessage":"missing TABLE_NAME","errorType":"Runtime.ConfigError","stackTrace":["main.go:1"]}`))
		os.Exit(2)
	}

	shutdown := make(chan struct{})
	req, _ := http.NewRequest(http.MethodPost, base+"/2020-01-01/extension/register", strings.NewReader(`{"events":["SHUTDOWN"]}`))
	req.Header.Set("Lambda-Extension-Name", "raw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "register:", err, resp)
		os.Exit(1)
	}
	id := resp.Header.Get("Lambda-Extension-Identifier")
	go func() {
		req, _ := http.NewRequest(http.MethodGet, base+"/2020-01-01/extension/event/next", nil)
		req.Header.Set("Lambda-Extension-Identifier", id)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			fmt.Printf("extension event %s\n", bytes.TrimSpace(b))
		}
		close(shutdown)
	}()
	sigterm := make(chan os.Signal, 1)
	signal.Notify(sigterm, syscall.SIGTERM)
	go func() {
		<-sigterm
		select {
		case <-shutdown:
		case <-time.After(time.Second):
		}
		os.Exit(0)
	}()

	for {
		resp, err := http.Get(base + "/2018-06-01/runtime/invocation/next")
		if err != nil {
			fmt.Fprintln(os.Stderr, "next:", err)
			os.Exit(1)
		}
		event, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
		switch {
		case bytes.Contains(event, []byte(`"data":"Ymln"`)): // "big"
			post("/2018-06-01/runtime/invocation/"+id+"/response", "", bytes.Repeat([]byte(" "), 7<<20))
		case bytes.Contains(event, []byte(`"data":"dHlwZWQtaGVhZGVy"`)): // "typed-header"
			post("/2018-06-01/runtime/invocation/"+id+"/error", "Custom.HeaderOnly", []byte("something broke"))
		default:
			post("/2018-06-01/runtime/invocation/"+id+"/response", "", []byte(`{"batchItemFailures":[]}`))
		}
	}
}
