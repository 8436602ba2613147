// gateway-preview computes the listeners the ingress gateway's Envoy gets from istiod for one
// rendered stack, with istiod's own config generator run in-process (no cluster, no Envoy):
// "what Envoy will run if this merges".
//
//	gateway-preview -render build/render/prod -out build/gateway-preview/prod/listeners.json
package main

import (
	_ "embed"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/test"
)

//go:embed apps/sample-apps.yaml
var sampleAppsYAML string

//go:embed apps/gateway-api-routes.yaml
var gatewayAPIRoutesYAML string

func main() {
	renderDir := flag.String("render", "", "render directory of one stack (python -m source_ip_edge.tools.render --out DIR)")
	out := flag.String("out", "", "write the full listeners as Envoy JSON here")
	appsFile := flag.String("apps", "", "sample application objects (default: the built-in apps/sample-apps.yaml)")
	stackFile := flag.String("stack-file", "", "Pulumi.<stack>.yaml: its access lists are what the RBAC check expects")
	flag.Parse()
	if *renderDir == "" {
		fmt.Fprintln(os.Stderr, "usage: gateway-preview -render DIR [-out listeners.json] [-apps apps.yaml]")
		os.Exit(2)
	}
	quietIstioLogs()
	if err := run(*renderDir, *out, *appsFile, *stackFile); err != nil {
		fmt.Fprintln(os.Stderr, "gateway-preview:", err)
		os.Exit(1)
	}
}

// quietIstioLogs keeps istiod's informational logging out of the review output. The default
// scope is silenced too: in-process it only complains that the fake cluster's Gateway API CRDs
// carry no bundle-version annotation.
func quietIstioLogs() {
	opts := log.DefaultOptions()
	opts.SetDefaultOutputLevel(log.OverrideScopeName, log.ErrorLevel)
	_ = log.Configure(opts)
	if scope := log.FindScope(log.DefaultScopeName); scope != nil {
		scope.SetOutputLevel(log.NoneLevel)
	}
}

func run(renderDir, out, appsFile, stackFile string) error {
	stack, err := LoadRenderedStack(renderDir)
	if err != nil {
		return err
	}
	apps := sampleAppsYAML
	if appsFile != "" {
		raw, err := os.ReadFile(appsFile)
		if err != nil {
			return err
		}
		apps = string(raw)
	}
	var access StackAccess
	if stackFile != "" {
		if access, err = LoadStackAccess(stackFile); err != nil {
			return err
		}
	} else {
		fmt.Println("no -stack-file: the RBAC check expects no allow or deny CIDRs")
	}
	expect, err := ExpectationsFor(stack, access)
	if err != nil {
		return err
	}
	var failed bool
	// The fake discovery server wants a test.Failer; test.Wrap gives one that turns a fatal
	// error into a returned error and runs the server's cleanups when done.
	werr := test.Wrap(func(t test.Failer) {
		gw, err := StartGateway(t, stack, apps, nil)
		if err != nil {
			t.Fatal(err)
		}
		ls := gw.Listeners()
		if err := WriteSummary(os.Stdout, ls, expect); err != nil {
			t.Fatal(err)
		}
		if out != "" {
			raw, err := ListenersJSON(ls)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(out, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("full listeners: %s\n", out)
		}
		results := CheckAll(ls, expect)
		names := make([]string, 0, len(results))
		for name := range results {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			if len(results[name]) == 0 {
				fmt.Printf("check %s: ok\n", name)
				continue
			}
			failed = true
			for _, p := range results[name] {
				fmt.Printf("check %s: FAIL %s\n", name, p)
			}
		}
	})
	if werr != nil {
		return werr
	}
	if failed {
		return fmt.Errorf("checks failed")
	}
	return nil
}
