package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jmespath/go-jmespath"

	"github.com/idem-run/idem/internal/pattern"
)

// The values of closed sets.
const (
	trimHorizon                 = "TRIM_HORIZON"
	latest                      = "LATEST"
	atTimestamp                 = "AT_TIMESTAMP"
	ReportBatchItemFailuresType = "ReportBatchItemFailures" // the one functionResponseTypes value
	eventFormatKafka            = "kafka"
	eventFormatKinesis          = "kinesis"
	eventFormatS3               = "s3"
	eventFormatDynamoDB         = "dynamodb"
)

// Ranges, as AWS documents them for stream event source mappings, and idem's.
const (
	MinShards, MaxShards                   = 1, 1024 // bound streams[].shards
	minRetention, maxRetention             = Duration(time.Hour), Duration(8760 * time.Hour)
	maxTimeout                             = Duration(900 * time.Second)
	MinBatchSize, MaxBatchSize             = 1, 10000 // bound mappings[].batchSize
	maxBatchingWindow                      = Duration(300 * time.Second)
	MinRetryAttempts, MaxRetryAttempts     = -1, 10000 // bound mappings[].maximumRetryAttempts
	minRecordAge, maxRecordAge             = Duration(60 * time.Second), Duration(604800 * time.Second)
	MinParallelization, MaxParallelization = 1, 10 // bound mappings[].parallelizationFactor
	MaxNameLen                             = 128   // bounds the length of names and idempotency scopes
	nameRule                               = "1 to 128 characters of A-Z a-z 0-9 . _ -"
)

// Validate reports every problem of f at once, each a *FieldError naming the
// path and the allowed range, joined with errors.Join; nil if there are none.
// It applies no defaults: call it after changing a File that Parse returned,
// e.g. after overriding DataDir.
func (f *File) Validate() error {
	if f == nil {
		return join([]*FieldError{{Err: fmt.Errorf("config: nil File")}})
	}
	return join(f.check())
}

// checker collects problems.
type checker struct {
	errs []*FieldError
}

func (c *checker) add(path string, err error) {
	c.errs = append(c.errs, &FieldError{Path: path, Err: err})
}

func (c *checker) addf(path, format string, args ...any) {
	c.add(path, fmt.Errorf(format, args...))
}

func (c *checker) intRange(path string, v, lo, hi int) {
	switch {
	case v < lo:
		c.addf(path, "%d is below the minimum %d", v, lo)
	case v > hi:
		c.addf(path, "%d is above the maximum %d", v, hi)
	}
}

func (c *checker) durRange(path string, v, lo, hi Duration) {
	switch {
	case v < lo:
		c.addf(path, "%s is below the minimum %s", v, lo)
	case v > hi:
		c.addf(path, "%s is above the maximum %s", v, hi)
	}
}

// name checks a name's form; names end up in keys and file names.
func (c *checker) name(path, s string) {
	if s == "" {
		c.addf(path, "required (%s)", nameRule)
		return
	}
	if !validName(s) {
		c.addf(path, "%q is not a valid name (allowed: %s)", s, nameRule)
	}
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// unique checks that name was not used by an earlier item of the same list.
func (c *checker) unique(seen map[string]string, path, name string) {
	if name == "" {
		return
	}
	if first, ok := seen[name]; ok {
		c.addf(path, "%q is already the name of %s", name, first)
		return
	}
	seen[name] = strings.TrimSuffix(path, ".name")
}

func (f *File) check() []*FieldError {
	var c checker
	if f.DataDir == "" {
		c.addf("dataDir", "required (a directory; default %s)", defaultDataDir)
	}
	c.listen("listen", f.Listen)
	if f.Region != "" && !regionPattern.MatchString(f.Region) {
		c.addf("region", "%q is not an AWS region name (such as us-east-1)", f.Region)
	}
	c.store(&f.Store)
	c.auth(&f.Auth)
	c.lease(f)
	c.debug(f.Debug)
	c.kafkaGroups(f)

	streams := make(map[string]string, len(f.Streams))
	for i := range f.Streams {
		s, p := &f.Streams[i], fmt.Sprintf("streams[%d]", i)
		c.name(p+".name", s.Name)
		c.unique(streams, p+".name", s.Name)
		c.intRange(p+".shards", s.Shards, MinShards, MaxShards)
		c.durRange(p+".retention", s.Retention, minRetention, maxRetention)
	}

	functions := make(map[string]string, len(f.Functions))
	for i := range f.Functions {
		fn, p := &f.Functions[i], fmt.Sprintf("functions[%d]", i)
		c.name(p+".name", fn.Name)
		c.unique(functions, p+".name", fn.Name)
		if fn.HTTP != nil {
			c.httpURL(p+".http.url", fn.HTTP.URL)
			if fn.Go != nil {
				c.addf(p+".go", "not allowed together with %s.http: a function is either HTTP or in-process Go", p)
			}
		}
		if pf := fn.Process; pf != nil {
			switch {
			case fn.HTTP != nil:
				c.addf(p+".process", "not allowed together with %s.http: a function has one kind", p)
			case fn.Go != nil:
				c.addf(p+".process", "not allowed together with %s.go: a function has one kind", p)
			}
			if pf.Command == "" {
				c.addf(p+".process.command", "required (the function's executable, e.g. ./bootstrap)")
			}
			c.intRange(p+".process.concurrency", pf.Concurrency, 1, 1024)
			c.intRange(p+".process.memorySize", pf.MemorySize, 128, 10240)
		}
		if fn.Timeout <= 0 {
			c.addf(p+".timeout", "%s must be greater than 0s and at most %s", fn.Timeout, maxTimeout)
		} else {
			c.durRange(p+".timeout", fn.Timeout, 0, maxTimeout)
		}
		c.invokeSettings(f, p, fn)
	}

	mappings := make(map[string]string, len(f.Mappings))
	for i := range f.Mappings {
		p := fmt.Sprintf("mappings[%d]", i)
		c.name(p+".name", f.Mappings[i].Name)
		c.unique(mappings, p+".name", f.Mappings[i].Name)
		c.mapping(f, p, &f.Mappings[i])
	}
	return c.errs
}

func (c *checker) store(s *Store) {
	if s.Postgres != nil && s.Redis != nil {
		c.addf("store", "set one of store.postgres and store.redis, not both")
	}
	if pg := s.Postgres; pg != nil {
		if pg.DSN == "" {
			c.addf("store.postgres.dsn", "required (e.g. postgres://idem@127.0.0.1:5432/idem)")
		}
		if !validSchema(pg.Schema) {
			c.addf("store.postgres.schema", "%q must be 1 to 63 of a-z 0-9 _, starting with a letter", pg.Schema)
		}
	}
	if r := s.Redis; r != nil {
		if _, _, err := net.SplitHostPort(r.Addr); err != nil {
			c.addf("store.redis.addr", "%q is not host:port", r.Addr)
		}
		c.intRange("store.redis.db", r.DB, 0, 15)
		if r.Prefix == "" || strings.ContainsAny(r.Prefix, "{} \t\n") {
			c.addf("store.redis.prefix", "%q must be non-empty, without spaces or braces", r.Prefix)
		}
	}
	c.dynamoDBStore(s)
}

// dynamoTablePattern is DynamoDB's table names.
var dynamoTablePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{3,255}$`)

func (c *checker) dynamoDBStore(s *Store) {
	d := s.DynamoDB
	if d == nil {
		return
	}
	if s.Postgres != nil || s.Redis != nil {
		c.addf("store", "set one of store.postgres, store.redis and store.dynamodb, not several")
	}
	if !dynamoTablePattern.MatchString(d.Table) {
		c.addf("store.dynamodb.table", "%q must be 3 to 255 of A-Z a-z 0-9 _ - .", d.Table)
	}
	if d.Region != "" && !regionPattern.MatchString(d.Region) {
		c.addf("store.dynamodb.region", "%q is not an AWS region (e.g. eu-west-1)", d.Region)
	}
	if d.Endpoint != "" {
		if u, err := url.Parse(d.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.addf("store.dynamodb.endpoint", "%q is not an http:// or https:// URL", d.Endpoint)
		}
	}
}

// validSchema accepts the unquoted PostgreSQL identifiers idem creates.
func validSchema(s string) bool {
	if s == "" || len(s) > 63 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
			return false
		}
	}
	return true
}

// regionPattern is the shape of AWS region names (us-east-1,
// ap-southeast-2, us-gov-west-1), which ARNs carry.
var regionPattern = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

func (c *checker) listen(path, addr string) {
	if addr == "" {
		c.addf(path, "required (host:port; default %s)", defaultListen)
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		c.add(path, fmt.Errorf("%q is not a host:port address: %w", addr, err))
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		c.addf(path, "port %q is not a number from 0 to 65535", port)
	}
}

// debug checks debug.pprof: a host:port on a loopback address, since the
// profiles it serves expose the process's internals, unauthenticated.
func (c *checker) debug(d *Debug) {
	if d == nil || d.Pprof == "" {
		return
	}
	const path = "debug.pprof"
	host, port, err := net.SplitHostPort(d.Pprof)
	if err != nil {
		c.add(path, fmt.Errorf("%q is not a host:port address: %w", d.Pprof, err))
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		c.addf(path, "port %q is not a number from 0 to 65535", port)
	}
	if !isLoopback(host) {
		c.addf(path, "host %q is not a loopback address (127.0.0.0/8, ::1 or localhost): pprof exposes the process's internals", host)
	}
}

// isLoopback reports whether host is localhost or a loopback IP address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *checker) httpURL(path, s string) {
	if s == "" {
		c.addf(path, "required (an absolute http or https URL)")
		return
	}
	u, err := url.Parse(s)
	if err != nil {
		c.add(path, fmt.Errorf("%q is not an absolute http or https URL: %w", s, err))
		return
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.addf(path, "%q is not an absolute http or https URL", s)
	}
}

func (c *checker) mapping(f *File, p string, m *Mapping) {
	var source *Stream
	kinds := 0
	for _, set := range []bool{m.Source.Stream != "", m.Source.Kafka != nil, m.Source.JetStream != nil, m.Source.Kinesis != nil, m.Source.Redis != nil, m.Source.DynamoDB != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds > 1:
		c.addf(p+".source", "set one of stream, kafka, jetstream, kinesis, redis and dynamodb")
	case kinds == 0:
		c.addf(p+".source.stream", "required (the name of a configured stream, or another kind of source: kafka, jetstream, kinesis, redis, dynamodb)")
	case m.Source.Stream != "":
		if source = f.Stream(m.Source.Stream); source == nil {
			c.addf(p+".source.stream", "unknown stream %q (%s)", m.Source.Stream, configured("streams", streamNames(f)))
		}
	}
	c.externalSource(p+".source", &m.Source)
	switch {
	case m.Function == "":
		c.addf(p+".function", "required (the name of a configured function)")
	case f.Function(m.Function) == nil:
		c.addf(p+".function", "unknown function %q (%s)", m.Function, configured("functions", functionNames(f)))
	}

	const positions = trimHorizon + ", " + latest + ", " + atTimestamp
	switch m.StartingPosition {
	case "":
		c.addf(p+".startingPosition", "required (one of %s)", positions)
	case atTimestamp:
		if m.Source.DynamoDB != nil {
			c.addf(p+".startingPosition", "%s is not supported by a dynamodb source: DynamoDB Streams has no such iterator, and Lambda refuses it too (allowed: %s, %s)", atTimestamp, trimHorizon, latest)
		}
	case trimHorizon, latest:
	default:
		c.addf(p+".startingPosition", "%q is not one of %s", m.StartingPosition, positions)
	}
	switch {
	case m.StartingPosition == atTimestamp && m.StartingPositionTimestamp == "":
		c.addf(p+".startingPositionTimestamp", "required when %s.startingPosition is %s (an RFC 3339 time such as 2026-01-01T00:00:00Z)", p, atTimestamp)
	case m.StartingPositionTimestamp != "":
		if _, err := time.Parse(time.RFC3339, m.StartingPositionTimestamp); err != nil {
			c.addf(p+".startingPositionTimestamp", "%q is not an RFC 3339 time such as 2026-01-01T00:00:00Z", m.StartingPositionTimestamp)
		}
	}

	c.intRange(p+".batchSize", m.BatchSize, MinBatchSize, MaxBatchSize)
	c.durRange(p+".maximumBatchingWindow", m.MaximumBatchingWindow, 0, maxBatchingWindow)
	c.intRange(p+".maximumRetryAttempts", m.MaximumRetryAttempts, MinRetryAttempts, MaxRetryAttempts)
	switch age := m.MaximumRecordAge; {
	case age == -1:
	case age < 0:
		c.addf(p+".maximumRecordAge", "%s is not allowed (-1 for no limit, or %s to %s)", age, minRecordAge, maxRecordAge)
	case age < minRecordAge:
		c.addf(p+".maximumRecordAge", "%s is below the minimum %s (or -1 for no limit)", age, minRecordAge)
	case age > maxRecordAge:
		c.addf(p+".maximumRecordAge", "%s is above the maximum %s (or -1 for no limit)", age, maxRecordAge)
	}
	c.intRange(p+".parallelizationFactor", m.ParallelizationFactor, MinParallelization, MaxParallelization)
	if m.TumblingWindow != 0 {
		c.durRange(p+".tumblingWindow", m.TumblingWindow, 0, Duration(900*time.Second))
		if m.ParallelizationFactor > 1 {
			c.addf(p+".tumblingWindow", "needs parallelizationFactor 1 (a shard has one window state), not %d", m.ParallelizationFactor)
		}
		if m.EventFormat == eventFormatKafka {
			c.addf(p+".tumblingWindow", "not available with eventFormat kafka (KafkaEvent has no window), as on Lambda: set eventFormat: kinesis")
		}
		if m.EventFormat == eventFormatS3 {
			c.addf(p+".tumblingWindow", "not available with eventFormat s3 (an S3Event has no window)")
		}
	}
	for j, t := range m.FunctionResponseTypes {
		fp := fmt.Sprintf("%s.functionResponseTypes[%d]", p, j)
		switch {
		case t != ReportBatchItemFailuresType:
			c.addf(fp, "%q is not supported (allowed: %s)", t, ReportBatchItemFailuresType)
		case m.EventFormat == eventFormatS3:
			c.addf(fp, "%s is not available with eventFormat s3: an S3Event's records carry no item identifier a function could report; set bisectBatchOnFunctionError: true to isolate a failing record", t)
		}
	}
	c.filters(p, m)
	switch m.EventFormat {
	case eventFormatKinesis, eventFormatS3, eventFormatDynamoDB:
	case eventFormatKafka:
		if m.Source.Kafka == nil {
			c.addf(p+".eventFormat", "%q needs a kafka source", m.EventFormat)
		}
	default:
		c.addf(p+".eventFormat", "%q is not supported (allowed: %s, %s, %s, %s)", m.EventFormat, eventFormatDynamoDB, eventFormatKafka, eventFormatKinesis, eventFormatS3)
	}

	if d := m.DestinationConfig.OnFailure; d != nil {
		dp := p + ".destinationConfig.onFailure.stream"
		switch {
		case d.Stream == "":
			c.addf(dp, "required (the name of a configured stream)")
		case f.Stream(d.Stream) == nil:
			c.addf(dp, "unknown stream %q (%s)", d.Stream, configured("streams", streamNames(f)))
		case d.Stream == m.Source.Stream:
			c.addf(dp, "%q is also %s.source.stream: failed records would be fed back into the mapping that failed them", d.Stream, p)
		}
	}

	c.retries(p, m.PermanentErrorTypes, m.Retry)

	ip := p + ".idempotency"
	if m.Idempotency.Scope == "" {
		c.addf(ip+".scope", "required (%s; Parse defaults it to the function name)", nameRule)
	} else if !validName(m.Idempotency.Scope) {
		c.addf(ip+".scope", "%q is not a valid scope (allowed: %s)", m.Idempotency.Scope, nameRule)
	}
	if m.Idempotency.Key != "" {
		if err := compileJMESPath(m.Idempotency.Key); err != nil {
			c.add(ip+".key", fmt.Errorf("%q is not a valid JMESPath expression: %w", m.Idempotency.Key, err))
		}
	}
	if source != nil && source.Retention > 0 && m.Idempotency.Retention < source.Retention {
		c.addf(ip+".retention", "%s is shorter than the retention %s of source stream %q: a replay of its retained records could run one twice (allowed: at least %s)",
			m.Idempotency.Retention, source.Retention, source.Name, source.Retention)
	}
}

func (c *checker) externalSource(p string, r *SourceRef) {
	if k := r.Kafka; k != nil {
		if len(k.Brokers) == 0 {
			c.addf(p+".kafka.brokers", "required (host:port of at least one broker)")
		}
		for i, b := range k.Brokers {
			if _, _, err := net.SplitHostPort(b); err != nil {
				c.addf(fmt.Sprintf("%s.kafka.brokers[%d]", p, i), "%q is not host:port", b)
			}
		}
		if k.Topic == "" {
			c.addf(p+".kafka.topic", "required")
		}
		c.durRange(p+".kafka.pollInterval", k.PollInterval, Duration(time.Millisecond), Duration(time.Minute))
		if k.Group == "" && k.SessionTimeout != 0 {
			c.addf(p+".kafka.sessionTimeout", "needs kafka.group")
		}
		if k.Group != "" && k.SessionTimeout != 0 {
			c.durRange(p+".kafka.sessionTimeout", k.SessionTimeout, Duration(time.Second), Duration(30*time.Minute))
		}
	}
	if js := r.JetStream; js != nil {
		if js.URL == "" {
			c.addf(p+".jetstream.url", "required (e.g. nats://127.0.0.1:4222)")
		}
		if js.Stream == "" {
			c.addf(p+".jetstream.stream", "required")
		}
		if t := js.PartitionByToken; t != nil {
			if len(js.Partitions) > 0 {
				c.addf(p+".jetstream.partitionByToken", "conflicts with partitions: set one")
			}
			if t.Token < 0 {
				c.addf(p+".jetstream.partitionByToken.token", "%d is negative (1-based token index, or 0 for the whole subject)", t.Token)
			}
			if t.Count < 1 || t.Count > 1024 {
				c.addf(p+".jetstream.partitionByToken.count", "%d is out of range (1 to 1024)", t.Count)
			}
		}
	}
	if k := r.Kinesis; k != nil {
		if k.Stream == "" {
			c.addf(p+".kinesis.stream", "required")
		}
		if k.Endpoint != "" {
			c.httpURL(p+".kinesis.endpoint", k.Endpoint)
		}
	}
	if d := r.DynamoDB; d != nil {
		switch {
		case d.Table == "" && d.StreamArn == "":
			c.addf(p+".dynamodb.table", "required (or dynamodb.streamArn): the table whose stream is read")
		case d.Table != "" && d.StreamArn != "":
			c.addf(p+".dynamodb.streamArn", "conflicts with dynamodb.table: set one")
		case d.Table != "" && !ddbTablePattern.MatchString(d.Table):
			c.addf(p+".dynamodb.table", "%q is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ - .)", d.Table)
		case d.StreamArn != "" && !ddbStreamARNPattern.MatchString(d.StreamArn):
			c.addf(p+".dynamodb.streamArn", "%q is not a DynamoDB stream ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)", d.StreamArn)
		}
		if d.Region != "" && !regionPattern.MatchString(d.Region) {
			c.addf(p+".dynamodb.region", "%q is not an AWS region such as us-east-1", d.Region)
		}
		if d.Endpoint != "" {
			c.httpURL(p+".dynamodb.endpoint", d.Endpoint)
		}
	}
	if rd := r.Redis; rd != nil {
		if _, _, err := net.SplitHostPort(rd.Addr); err != nil {
			c.addf(p+".redis.addr", "%q is not host:port", rd.Addr)
		}
		if len(rd.Keys) == 0 {
			c.addf(p+".redis.keys", "required (one stream key per shard)")
		}
		c.intRange(p+".redis.db", rd.DB, 0, 15)
	}
}

// DynamoDB's names: a table, and a stream's ARN.
var (
	ddbTablePattern     = regexp.MustCompile(`^[A-Za-z0-9_.-]{3,255}$`)
	ddbStreamARNPattern = regexp.MustCompile(`^arn:aws[a-z-]*:dynamodb:[a-z0-9-]+:[0-9]{12}:table/[A-Za-z0-9_.-]{3,255}/stream/[^/]+$`)
)

// compileJMESPath compiles expr, turning a panic in the parser into an error:
// the expression comes from the file, and no file should crash the server.
func compileJMESPath(expr string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("JMESPath parser failed: %v", r)
		}
	}()
	_, err = jmespath.Compile(expr)
	return err
}

func configured(what string, names []string) string {
	if len(names) == 0 {
		return "no " + what + " are configured"
	}
	return "configured: " + strings.Join(names, ", ")
}

func streamNames(f *File) []string {
	names := make([]string, 0, len(f.Streams))
	for _, s := range f.Streams {
		if s.Name != "" && !slices.Contains(names, s.Name) {
			names = append(names, s.Name)
		}
	}
	return names
}

func functionNames(f *File) []string {
	names := make([]string, 0, len(f.Functions))
	for _, fn := range f.Functions {
		if fn.Name != "" && !slices.Contains(names, fn.Name) {
			names = append(names, fn.Name)
		}
	}
	return names
}

// MaxFilters is Lambda's default quota of filterCriteria patterns.
const MaxFilters = 5

func (c *checker) filters(p string, m *Mapping) {
	fc := m.FilterCriteria
	if fc == nil {
		return
	}
	if len(fc.Filters) == 0 {
		c.addf(p+".filterCriteria.filters", "required: at least one pattern (or leave filterCriteria out)")
	}
	if len(fc.Filters) > MaxFilters {
		c.addf(p+".filterCriteria.filters", "%d patterns, above the limit of %d", len(fc.Filters), MaxFilters)
	}
	format := m.EventFormat
	if format != eventFormatKafka && format != eventFormatS3 && format != eventFormatDynamoDB {
		format = eventFormatKinesis
	}
	for i, f := range fc.Filters {
		fp := fmt.Sprintf("%s.filterCriteria.filters[%d].pattern", p, i)
		if f.Pattern == "" {
			c.addf(fp, "required (an EventBridge pattern in JSON, e.g. '{\"data\": {\"type\": [\"order\"]}}')")
			continue
		}
		if _, err := pattern.CompileFilter(f.Pattern, format); err != nil {
			c.add(fp, err)
		}
	}
}

// retries checks the retry settings that mappings and asynchronous
// invocations share, under path p.
func (c *checker) retries(p string, permanent []string, r Retry) {
	for j, t := range permanent {
		if strings.TrimSpace(t) == "" {
			c.addf(fmt.Sprintf("%s.permanentErrorTypes[%d]", p, j), "empty (an error type such as ValidationError)")
		}
	}
	if r.BaseDelay <= 0 {
		c.addf(p+".retry.baseDelay", "%s must be greater than 0s", r.BaseDelay)
	} else if r.MaxDelay < r.BaseDelay {
		c.addf(p+".retry.maxDelay", "%s is below the minimum %s (%s.retry.baseDelay)", r.MaxDelay, r.BaseDelay, p)
	}
}
