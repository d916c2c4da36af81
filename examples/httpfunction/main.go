// Command httpfunction is a function idem invokes over HTTP: it receives
// Lambda's KinesisEvent JSON, exactly what a Kinesis-triggered Lambda
// function receives, and answers with a KinesisEventResponse. Existing
// Lambda handlers port to it unchanged.
//
//	go run ./examples/httpfunction -listen 127.0.0.1:9000
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"

	"github.com/aws/aws-lambda-go/events"
)

func handler(event events.KinesisEvent) events.KinesisEventResponse {
	var resp events.KinesisEventResponse
	for _, r := range event.Records {
		if len(r.Kinesis.Data) == 0 {
			resp.BatchItemFailures = append(resp.BatchItemFailures, events.KinesisBatchItemFailure{ItemIdentifier: r.EventID})
			continue
		}
		log.Printf("shipping order %s (partition key %s): %s", r.Kinesis.SequenceNumber, r.Kinesis.PartitionKey, r.Kinesis.Data)
	}
	return resp
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to listen on")
	flag.Parse()
	http.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		var event events.KinesisEvent
		if err := json.NewDecoder(r.Body).Decode(&event); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(handler(event))
	})
	log.Printf("function listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
