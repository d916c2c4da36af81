package dynamodb

import (
	"fmt"
	"net/url"
	"strings"
)

// URL is what a dynamodb:// URL names: where the table is and what it is
// called.
type URL struct {
	// Table is the table's name (DefaultTable when the URL names none).
	Table string
	// Region is the AWS region; "" for the SDK's default chain.
	Region string
	// Endpoint is the endpoint's URL; "" for DynamoDB's own in Region.
	Endpoint string
}

// Options returns the Options that open the store u names.
func (u URL) Options() []Option {
	opts := []Option{WithTable(u.Table)}
	if u.Region != "" {
		opts = append(opts, WithRegion(u.Region))
	}
	if u.Endpoint != "" {
		opts = append(opts, WithEndpoint(u.Endpoint))
	}
	return opts
}

// ParseURL reads dynamodb://[host:port][/table][?region=R&tls=true], the
// form of stores given on a command line (idem bench --store): with a
// host, the endpoint is http://host:port (https:// with tls=true), a local
// emulator or a VPC endpoint; without one, DynamoDB's own endpoint of the
// region (dynamodb:///idem?region=eu-west-1, or dynamodb:// for the
// defaults).
func ParseURL(s string) (URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return URL{}, fmt.Errorf("dynamodb store URL %q: %w", s, err)
	}
	if u.Scheme != "dynamodb" {
		return URL{}, fmt.Errorf("dynamodb store URL %q: scheme %q, want dynamodb://", s, u.Scheme)
	}
	out := URL{Table: DefaultTable}
	if t := strings.Trim(u.Path, "/"); t != "" {
		if !validTable(t) {
			return URL{}, fmt.Errorf("dynamodb store URL %q: table name %q must be 3 to 255 of A-Z a-z 0-9 _ - .", s, t)
		}
		out.Table = t
	}
	q := u.Query()
	for k := range q {
		if k != "region" && k != "tls" {
			return URL{}, fmt.Errorf("dynamodb store URL %q: unknown parameter %q (want region, tls)", s, k)
		}
	}
	out.Region = q.Get("region")
	if u.Host != "" {
		scheme := "http"
		switch q.Get("tls") {
		case "", "false", "0":
		case "true", "1":
			scheme = "https"
		default:
			return URL{}, fmt.Errorf("dynamodb store URL %q: tls=%q, want true or false", s, q.Get("tls"))
		}
		out.Endpoint = scheme + "://" + u.Host
	}
	return out, nil
}
