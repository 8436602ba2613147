// pulumi-language-python for this project's toolchain.
//
// The upstream host lives in its own module
// (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3), which the Go
// module proxy reachable here does not serve (403 "This module version is not
// available", see docs/toolchain.md). This is a small host written for the
// project against the LanguageRuntime protocol of the same sdk/v3 release as the
// CLI. It runs the program through upstream's `pulumi-language-python-exec`
// (shipped in sdk/v3 and copied beside this binary) and resolves Python with
// upstream's python/toolchain package, so `runtime.options.virtualenv` and
// `toolchain` in Pulumi.yaml mean what they mean with the official host.
//
// What it leaves out: plugin discovery from installed packages
// (GetRequiredPlugins/Packages answer "none": the toolchain puts the provider
// plugins on PATH and automatic plugin acquisition is off), dependency
// installation, templates and code generation.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// version is stamped at build time with the sdk/v3 version this host speaks.
var version = "dev"

// execShimName is upstream's runner script; it must sit beside this binary.
const execShimName = "pulumi-language-python-exec"

// exitCodeUserActionable is the shim's "error already shown to the user" exit code.
const exitCodeUserActionable = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	execShim      string
}

func main() {
	// The engine passes flags it may grow over time, then the engine address last.
	args := os.Args[1:]
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: pulumi-language-python [flags] ENGINE_ADDRESS")
		os.Exit(2)
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot locate this executable: %v\n", err)
		os.Exit(1)
	}
	h := &host{
		engineAddress: args[len(args)-1],
		execShim:      filepath.Join(filepath.Dir(self), execShimName),
	}
	// The engine stops its plugins with SIGINT and kills them only 5 s later, as upstream's host
	// expects: stop serving on it. NotifyContext also takes SIGINT back when this process started
	// with it ignored (a background job of a shell without job control passes SIG_IGN on), which
	// otherwise cost every pulumi command 5 s. And stop when the engine is gone (health check).
	ctx, stopOnSignal := signal.NotifyContext(context.Background(), os.Interrupt)
	cancel := make(chan bool)
	go func() {
		<-ctx.Done()
		stopOnSignal()
		close(cancel)
	}()
	if err := rpcutil.Healthcheck(ctx, h.engineAddress, 5*time.Minute, stopOnSignal); err != nil {
		fmt.Fprintf(os.Stderr, "could not start the engine health check: %v\n", err)
		os.Exit(1)
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "could not start language host RPC server: %v\n", err)
		os.Exit(1)
	}
	// The engine reads the port from the first line on stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "language host RPC stopped serving: %v\n", err)
		os.Exit(1)
	}
}

// resolveToolchain maps Pulumi.yaml's runtime options onto upstream's toolchain resolver.
func resolveToolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts := toolchain.PythonOptions{Toolchain: toolchain.Pip}
	if info != nil {
		opts.Root = info.GetRootDirectory()
		opts.ProgramDir = info.GetProgramDirectory()
		fields := info.GetOptions().GetFields()
		if v, ok := fields["virtualenv"]; ok {
			opts.Virtualenv = v.GetStringValue()
		}
		if v, ok := fields["toolchain"]; ok {
			switch v.GetStringValue() {
			case "pip", "":
				opts.Toolchain = toolchain.Pip
			case "poetry":
				opts.Toolchain = toolchain.Poetry
			case "uv":
				opts.Toolchain = toolchain.Uv
			default:
				return nil, fmt.Errorf("unsupported python toolchain %q", v.GetStringValue())
			}
		}
	}
	return toolchain.ResolveToolchain(opts)
}

func (h *host) Handshake(ctx context.Context,
	req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(ctx context.Context, _ *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context,
	req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(ctx context.Context,
	req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) RuntimeOptionsPrompts(ctx context.Context,
	req *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	return errors.New("this toolchain's python host does not install dependencies: " +
		"create the virtualenv named in Pulumi.yaml first (make setup-python)")
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	about, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: about.PythonExecutable,
		Version:    about.PythonVersion.String(),
	}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context,
	req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	packages, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	deps := make([]*pulumirpc.DependencyInfo, 0, len(packages))
	for _, p := range packages {
		deps = append(deps, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}

// Run starts upstream's exec shim under the project's Python; the shim connects
// back to the resource monitor and runs the program.
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	args := []string{h.execShim}
	flag := func(name, value string) {
		if value != "" {
			args = append(args, "--"+name, value)
		}
	}
	flag("monitor", req.GetMonitorAddress())
	flag("engine", h.engineAddress)
	flag("project", req.GetProject())
	flag("stack", req.GetStack())
	flag("pwd", req.GetPwd())
	flag("dry_run", strconv.FormatBool(req.GetDryRun()))
	flag("parallel", strconv.Itoa(int(req.GetParallel())))
	flag("organization", req.GetOrganization())
	flag("root_directory", req.GetInfo().GetRootDirectory())
	program := req.GetProgram()
	if program == "" {
		program = "."
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	// The shim expects a JSON object and a JSON list, never null.
	configMap, secretKeyList := req.GetConfig(), req.GetConfigSecretKeys()
	if configMap == nil {
		configMap = map[string]string{}
	}
	if secretKeyList == nil {
		secretKeyList = []string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, fmt.Errorf("serializing config: %w", err)
	}
	secretKeys, err := json.Marshal(secretKeyList)
	if err != nil {
		return nil, fmt.Errorf("serializing config secret keys: %w", err)
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secretKeys))
	if req.GetPwd() != "" {
		cmd.Dir = req.GetPwd()
	}
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == exitCodeUserActionable {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run %s: %v", execShimName, err)}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}
