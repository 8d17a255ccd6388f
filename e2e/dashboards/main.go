// Command q8s-dashboards loads q8s's Grafana dashboards into Grafana's typed
// dashboard model (grafana-foundation-sdk's Go types, strict: an unknown or
// mistyped field fails) and prints every panel's PromQL, one JSON object per
// line, for the tests to evaluate with a real Prometheus.
//
//	q8s-dashboards dashboards/*.json
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// query is one panel target, as the tests read it.
type query struct {
	Dashboard string `json:"dashboard"`
	Panel     string `json:"panel"`
	RefID     string `json:"refId"`
	Expr      string `json:"expr"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: q8s-dashboards DASHBOARD.json...")
		os.Exit(2)
	}
	// Panel options and queries decode into their plugins' own types.
	plugins.RegisterDefaultPlugins()
	failed := false
	out := json.NewEncoder(os.Stdout)
	for _, path := range os.Args[1:] {
		if err := check(path, out); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func check(path string, out *json.Encoder) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var board dashboard.Dashboard
	if err := failure(board.UnmarshalJSONStrict(raw)); err != nil {
		return fmt.Errorf("not a Grafana dashboard: %w", err)
	}
	if err := failure(board.Validate()); err != nil {
		return fmt.Errorf("invalid: %w", err)
	}
	// The strict decoder checks every field but drops the panels it checked
	// (a panel's empty error list stops the assignment), so the queries are
	// read by the plain decoder, into the same types.
	board = dashboard.Dashboard{}
	if err := json.Unmarshal(raw, &board); err != nil {
		return fmt.Errorf("not a Grafana dashboard: %w", err)
	}
	title := deref(board.Title)
	if title == "" || board.Uid == nil {
		return fmt.Errorf("a dashboard needs a title and a uid")
	}
	count := 0
	for _, entry := range board.Panels {
		panel := entry.Panel
		if panel == nil {
			continue
		}
		if len(panel.Targets) == 0 {
			return fmt.Errorf("panel %q has no query", deref(panel.Title))
		}
		for _, target := range panel.Targets {
			promql, ok := target.(*prometheus.Dataquery)
			if !ok || promql.Expr == "" {
				return fmt.Errorf("panel %q has a query that is not PromQL: %T", deref(panel.Title), target)
			}
			if err := out.Encode(query{title, deref(panel.Title), deref(promql.RefId), promql.Expr}); err != nil {
				return err
			}
			count++
		}
	}
	if count == 0 {
		return fmt.Errorf("no panel with a query")
	}
	return nil
}

// failure is err unless it is an empty list of errors: the SDK returns its
// error list typed even when it holds none, which is no nil error.
func failure(err error) error {
	var errs cog.BuildErrors
	if errors.As(err, &errs) && len(errs) == 0 {
		return nil
	}
	return err
}

func deref(text *string) string {
	if text == nil {
		return ""
	}
	return *text
}
