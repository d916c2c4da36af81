package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// report is what -json prints: the settings, every run and the summary.
type report struct {
	// Config is the settings of the command.
	Config reportConfig `json:"config"`
	// Started is when the first run began, in UTC.
	Started time.Time `json:"started"`
	// Finished is when the last run ended, in UTC.
	Finished time.Time `json:"finished"`
	// LoadAverageStart is /proc/loadavg's 1, 5 and 15 minute load
	// averages at start.
	LoadAverageStart string `json:"loadAverageStart"`
	// LoadAverageEnd is the same at the end.
	LoadAverageEnd string `json:"loadAverageEnd"`
	// Runs is every run, in the order run.
	Runs []runResult `json:"runs"`
	// Summary is every system's figures over the rounds.
	Summary []summary `json:"summary"`
}

// reportConfig is the settings a report was made with.
type reportConfig struct {
	// Records is the number of records of a run (-records).
	Records int `json:"records"`
	// DBOSRecords is the number of records of a DBOS run (-dbos-records).
	DBOSRecords int `json:"dbosRecords"`
	// Rounds is the number of rounds (-rounds).
	Rounds int `json:"rounds"`
	// Partitions is the partition counts (-partitions).
	Partitions []int `json:"partitions"`
	// Batch is the hand-written loop's and idem's batch size (-batch).
	Batch int `json:"batch"`
	// WatermillBatch is watermill-sql's SubscribeBatchSize
	// (-watermill-batch).
	WatermillBatch int `json:"watermillBatch"`
	// DBOSWorkers is the number of concurrent DBOS workflows
	// (-dbos-workers).
	DBOSWorkers int `json:"dbosWorkers"`
	// DBOSSeparateDB says whether DBOS's system tables were in a database
	// of their own (-dbos-separate-db).
	DBOSSeparateDB bool `json:"dbosSeparateDB"`
}

// runResult is one run of one system.
type runResult struct {
	// System is the system's name.
	System string `json:"system"`
	// Partitions is 0 for systems without a partition count.
	Partitions int `json:"partitions"`
	// Round is the round, from 1.
	Round int `json:"round"`
	// Records is the number of records of the run.
	Records int `json:"records"`
	// PrepareSeconds is the untimed preparation: loading the input,
	// creating tables, starting the system.
	PrepareSeconds float64 `json:"prepareSeconds"`
	// Seconds is the timed part: from the start of consumption until every
	// row is committed.
	Seconds float64 `json:"seconds"`
	// RecordsPerSecond is Records over Seconds.
	RecordsPerSecond float64 `json:"recordsPerSecond"`
}

// summary is one system's records/s over the rounds.
type summary struct {
	// System is the system's name.
	System string `json:"system"`
	// Partitions is the partition count; 0 for systems without one.
	Partitions int `json:"partitions"`
	// Records is the number of records of each of its runs.
	Records int `json:"records"`
	// Min is the lowest records/s over the rounds.
	Min float64 `json:"min"`
	// Median is the median records/s over the rounds.
	Median float64 `json:"median"`
	// Max is the highest records/s over the rounds.
	Max float64 `json:"max"`
	// BaselinePartitions is the partition count of the hand-written run
	// Ratio compares with: the system's own, or 1 for systems without one.
	BaselinePartitions int `json:"baselinePartitions"`
	// Ratio is Median over the hand-written loop's median at
	// BaselinePartitions; 0 when that loop did not run.
	Ratio float64 `json:"ratio,omitempty"`
}

// summarize computes every system's min, median and max records/s and its
// median's ratio to the hand-written loop's.
func summarize(systems []system, runs []runResult) []summary {
	rates := func(name string, parts int) []float64 {
		var v []float64
		for _, r := range runs {
			if r.System == name && r.Partitions == parts {
				v = append(v, r.RecordsPerSecond)
			}
		}
		slices.Sort(v)
		return v
	}
	var out []summary
	for _, s := range systems {
		v := rates(s.name, s.partitions)
		if len(v) == 0 {
			continue
		}
		sum := summary{System: s.name, Partitions: s.partitions, Min: v[0], Median: median(v), Max: v[len(v)-1],
			BaselinePartitions: max(s.partitions, 1)}
		for _, r := range runs {
			if r.System == s.name && r.Partitions == s.partitions {
				sum.Records = r.Records
			}
		}
		if base := rates("hand-written", sum.BaselinePartitions); len(base) > 0 {
			sum.Ratio = sum.Median / median(base)
		}
		out = append(out, sum)
	}
	return out
}

// median is the median of sorted v.
func median(v []float64) float64 {
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// markdown renders the summary as a Markdown table with its settings.
func (r report) markdown() string {
	var b strings.Builder
	c := r.Config
	fmt.Fprintf(&b, "\n%d records a run", c.Records)
	if c.DBOSRecords != c.Records {
		fmt.Fprintf(&b, " (DBOS Transact: %d records a run)", c.DBOSRecords)
	}
	dbosDB := "its system tables in a schema of the same database, one transaction a step"
	if c.DBOSSeparateDB {
		dbosDB = "its system tables in database " + dbosSeparateDatabase
	}
	fmt.Fprintf(&b, ", %d rounds; batch %d (hand-written, idem), watermill-sql SubscribeBatchSize %d, DBOS %d concurrent workflows (%s)\n",
		c.Rounds, c.Batch, c.WatermillBatch, c.DBOSWorkers, dbosDB)
	fmt.Fprintf(&b, "%s to %s UTC; load average (1, 5, 15 min) at start %s, at end %s\n\n",
		r.Started.Format("2006-01-02 15:04:05"), r.Finished.Format("15:04:05"), r.LoadAverageStart, r.LoadAverageEnd)
	b.WriteString("| system | partitions | records | records/s min | median | max | vs hand-written (median) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	footnote := false
	for _, s := range r.Summary {
		parts := "–"
		if s.Partitions > 0 {
			parts = fmt.Sprint(s.Partitions)
		}
		ratio := "–"
		if s.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", s.Ratio)
			if s.Partitions == 0 {
				ratio += " ¹"
				footnote = true
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", s.System, parts, thousands(float64(s.Records)),
			thousands(s.Min), thousands(s.Median), thousands(s.Max), ratio)
	}
	if footnote {
		b.WriteString("\n¹ No partition count: compared with the hand-written loop with 1 partition.\n")
	}
	return b.String()
}

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
