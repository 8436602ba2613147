// gateway-preview computes the listeners the ingress gateway's Envoy gets from istiod for one
// rendered stack, with istiod's own config generator run in-process (no cluster, no Envoy):
// "what Envoy will run if this merges".
//
//	gateway-preview -render build/render/prod -out build/gateway-preview/prod/listeners.json
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"istio.io/istio/pkg/log"
	"istio.io/istio/pkg/test"
)

//go:embed apps/sample-apps.yaml
var sampleAppsYAML string

//go:embed apps/gateway-api-routes.yaml
var gatewayAPIRoutesYAML string

func main() {
	renderDir := flag.String("render", "", "render directory of one stack (python -m components.render --out DIR)")
	out := flag.String("out", "", "write the full listeners as Envoy JSON here")
	appsFile := flag.String("apps", "", "sample application objects (default: the built-in apps/sample-apps.yaml)")
	stackFile := flag.String("stack-file", "", "Pulumi.<stack>.yaml: its access lists are what the RBAC check expects")
	xdsAddr := flag.String("xds", "", "live: istiod's plaintext xDS address (host:15010); ask the running istiod instead of computing offline")
	kubeconfig := flag.String("kubeconfig", "", "live: the API server istiod watches (where the gateway pods and the sample apps are)")
	factsFile := flag.String("facts", "", "write the checks' results and each HAProxy-fronted listener's facts here as JSON")
	flag.Parse()
	if *renderDir == "" || (*xdsAddr == "") != (*kubeconfig == "") {
		fmt.Fprintln(os.Stderr, "usage: gateway-preview -render DIR [-stack-file F] [-out listeners.json] [-apps apps.yaml] [-facts facts.json] [-xds HOST:15010 -kubeconfig K]")
		os.Exit(2)
	}
	quietIstioLogs()
	opts := runOptions{RenderDir: *renderDir, Out: *out, AppsFile: *appsFile, StackFile: *stackFile, FactsFile: *factsFile}
	if *xdsAddr != "" {
		opts.Live = &LiveOptions{XDSAddr: *xdsAddr, Kubeconfig: *kubeconfig, Settle: 3 * time.Second, Timeout: 90 * time.Second}
	}
	if err := run(opts); err != nil {
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

type runOptions struct {
	RenderDir, Out, AppsFile, StackFile, FactsFile string
	Live                                           *LiveOptions // nil: offline
}

func run(o runOptions) error {
	stack, err := LoadRenderedStack(o.RenderDir)
	if err != nil {
		return err
	}
	apps := sampleAppsYAML
	if o.AppsFile != "" {
		raw, err := os.ReadFile(o.AppsFile)
		if err != nil {
			return err
		}
		apps = string(raw)
	}
	var access StackAccess
	if o.StackFile != "" {
		if access, err = LoadStackAccess(o.StackFile); err != nil {
			return err
		}
	} else {
		fmt.Println("no -stack-file: the RBAC check expects no allow or deny CIDRs")
	}
	expect, err := ExpectationsFor(stack, access)
	if err != nil {
		return err
	}
	if o.Live != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		gateways, err := FetchLive(ctx, stack, apps, *o.Live)
		if err != nil {
			return fmt.Errorf("live istiod %s: %v", o.Live.XDSAddr, err)
		}
		pods := make([]string, len(gateways))
		for i, gw := range gateways {
			pods[i] = gw.Pod
		}
		failed := false
		for i, gw := range gateways {
			fmt.Printf("gateway pod %s (xDS node %s), listeners from istiod at %s:\n", gw.Pod, gw.NodeID, o.Live.XDSAddr)
			out, facts := o.Out, o.FactsFile
			if i > 0 { // one pod's files; the others are checked and summarised
				out, facts = "", ""
			}
			bad, err := report(gw.Listeners, expect, out, facts, pods)
			if err != nil {
				return err
			}
			failed = failed || bad
		}
		if failed {
			return fmt.Errorf("checks failed")
		}
		return nil
	}
	var failed bool
	// The fake discovery server wants a test.Failer; test.Wrap gives one that turns a fatal
	// error into a returned error and runs the server's cleanups when done.
	werr := test.Wrap(func(t test.Failer) {
		gw, err := StartGateway(t, stack, apps, nil)
		if err != nil {
			t.Fatal(err)
		}
		if failed, err = report(gw.Listeners(), expect, o.Out, o.FactsFile, nil); err != nil {
			t.Fatal(err)
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

// report prints the summary and the checks' results, and writes the full listeners and the facts
// when asked; failed when a check found a problem.
func report(ls []*listener.Listener, expect Expectations, out, factsFile string, pods []string) (bool, error) {
	if err := WriteSummary(os.Stdout, ls, expect); err != nil {
		return false, err
	}
	if out != "" {
		raw, err := ListenersJSON(ls)
		if err != nil {
			return false, err
		}
		if err := writeFile(out, raw); err != nil {
			return false, err
		}
		fmt.Printf("full listeners: %s\n", out)
	}
	results := CheckAll(ls, expect)
	if factsFile != "" {
		raw, err := json.MarshalIndent(FactsOf(ls, expect, results, pods), "", "  ")
		if err != nil {
			return false, err
		}
		if err := writeFile(factsFile, raw); err != nil {
			return false, err
		}
	}
	names := make([]string, 0, len(results))
	for name := range results {
		names = append(names, name)
	}
	sort.Strings(names)
	failed := false
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
	return failed, nil
}

func writeFile(path string, raw []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}
