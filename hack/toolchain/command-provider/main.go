// pulumi-resource-command stand-in for this project's toolchain.
//
// Upstream's provider module (github.com/pulumi/pulumi-command/provider) is not served by
// the Go module proxy reachable here (403 "This module version is not available", see
// docs/toolchain.md), so no build of it is possible. This plugin, written for the project
// against the ResourceProvider gRPC protocol of sdk/v3, implements the part of
// pulumi-command 1.2.1 the project uses, with upstream's documented behaviour:
//
//   - command:local:Command and command:remote:Command: `create` on create, `update` (or
//     `create` when unset) on update, `delete` on delete; a change of `triggers` replaces;
//     `stdout`/`stderr` outputs without their trailing newline; PULUMI_COMMAND_STDOUT and
//     PULUMI_COMMAND_STDERR carry the previous outputs unless addPreviousOutputInEnv is false;
//     `environment`, `stdin`, local `dir` and `interpreter`.
//   - remote: SSH with privateKey (+ privateKeyPassword), password or an agent; `hostKey`
//     pins the server key, otherwise any key is accepted; dialErrorLimit/perDialTimeout
//     retries; `environment` is sent with SSH setenv, which the server must AcceptEnv
//     (an error otherwise, as upstream).
//   - When any input is secret, stdout and stderr are secret (a secret connection makes a
//     remote command's output secret, as with upstream).
//
// Not implemented (an error says so): CopyToRemote, CopyFile, the local:run function,
// assetPaths/archivePaths, connection.proxy, and streaming output to the engine's log.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"google.golang.org/protobuf/types/known/emptypb"
)

// version is stamped at build time with the pulumi-command version the Python SDK pins.
var version = "1.2.1"

const (
	localCommand  = "command:local:Command"
	remoteCommand = "command:remote:Command"
	envStdout     = "PULUMI_COMMAND_STDOUT"
	envStderr     = "PULUMI_COMMAND_STDERR"
)

var marshalOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, KeepResources: true}

type commandProvider struct {
	pulumirpc.UnimplementedResourceProviderServer
}

func main() {
	err := provider.Main("command", func(*provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return &commandProvider{}, nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func typeOf(urn string) string {
	// urn:pulumi:stack::project::[parent$]type::name
	parts := strings.Split(urn, "::")
	if len(parts) < 4 {
		return ""
	}
	types := strings.Split(parts[2], "$")
	return types[len(types)-1]
}

func supported(urn string) error {
	switch t := typeOf(urn); t {
	case localCommand, remoteCommand:
		return nil
	default:
		return fmt.Errorf("%s is not implemented by this toolchain's pulumi-resource-command stand-in "+
			"(upstream's provider module is not served by the Go module proxy; see docs/toolchain.md)", t)
	}
}

func (p *commandProvider) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (p *commandProvider) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	return &pulumirpc.GetSchemaResponse{Schema: fmt.Sprintf(`{"name":"command","version":%q}`, version)}, nil
}

func (p *commandProvider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *commandProvider) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *commandProvider) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func (p *commandProvider) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

func (p *commandProvider) Invoke(_ context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	return nil, fmt.Errorf("function %s is not implemented by this toolchain's pulumi-resource-command stand-in",
		req.GetTok())
}

func (p *commandProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if err := supported(req.GetUrn()); err != nil {
		return nil, err
	}
	news, err := plugin.UnmarshalProperties(req.GetNews(), marshalOpts)
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	if typeOf(req.GetUrn()) == remoteCommand {
		if conn, ok := news["connection"]; !ok || conn.IsNull() {
			failures = append(failures, &pulumirpc.CheckFailure{Property: "connection", Reason: "missing required property"})
		}
	}
	for _, key := range []resource.PropertyKey{"assetPaths", "archivePaths"} {
		if v, ok := news[key]; ok && !v.IsNull() {
			failures = append(failures, &pulumirpc.CheckFailure{
				Property: string(key), Reason: "not implemented by this toolchain's stand-in provider",
			})
		}
	}
	return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
}

// Diff compares inputs: a change of `triggers` replaces, any other change updates.
func (p *commandProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, err := plugin.UnmarshalProperties(req.GetOldInputs(), marshalOpts)
	if err != nil {
		return nil, err
	}
	if len(olds) == 0 {
		if olds, err = plugin.UnmarshalProperties(req.GetOlds(), marshalOpts); err != nil {
			return nil, err
		}
		delete(olds, "stdout")
		delete(olds, "stderr")
	}
	news, err := plugin.UnmarshalProperties(req.GetNews(), marshalOpts)
	if err != nil {
		return nil, err
	}
	keys := map[resource.PropertyKey]bool{}
	for k := range olds {
		keys[k] = true
	}
	for k := range news {
		keys[k] = true
	}
	var diffs, replaces []string
	detailed := map[string]*pulumirpc.PropertyDiff{}
	for k := range keys {
		o, n := olds[k], news[k]
		if n.ContainsUnknowns() || !o.DeepEquals(n) {
			diffs = append(diffs, string(k))
			kind := pulumirpc.PropertyDiff_UPDATE
			if k == "triggers" {
				replaces = append(replaces, string(k))
				kind = pulumirpc.PropertyDiff_UPDATE_REPLACE
			}
			detailed[string(k)] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
		}
	}
	sort.Strings(diffs)
	sort.Strings(replaces)
	changes := pulumirpc.DiffResponse_DIFF_NONE
	if len(diffs) > 0 {
		changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	return &pulumirpc.DiffResponse{
		Changes: changes, Diffs: diffs, Replaces: replaces,
		DetailedDiff: detailed, HasDetailedDiff: true,
	}, nil
}

func (p *commandProvider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	if err := supported(req.GetUrn()); err != nil {
		return nil, err
	}
	inputs, err := plugin.UnmarshalProperties(req.GetProperties(), marshalOpts)
	if err != nil {
		return nil, err
	}
	id := "preview"
	if !req.GetPreview() {
		id, err = newID()
		if err != nil {
			return nil, err
		}
	}
	outs, err := p.execute(ctx, req.GetUrn(), inputs, "create", nil, req.GetPreview())
	if err != nil {
		return nil, err
	}
	props, err := plugin.MarshalProperties(outs, marshalOpts)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

func (p *commandProvider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	if err := supported(req.GetUrn()); err != nil {
		return nil, err
	}
	inputs, err := plugin.UnmarshalProperties(req.GetNews(), marshalOpts)
	if err != nil {
		return nil, err
	}
	olds, err := plugin.UnmarshalProperties(req.GetOlds(), marshalOpts)
	if err != nil {
		return nil, err
	}
	which := "update"
	if s, _ := stringProp(inputs, "update"); s == "" {
		which = "create"
	}
	outs, err := p.execute(ctx, req.GetUrn(), inputs, which, olds, req.GetPreview())
	if err != nil {
		return nil, err
	}
	props, err := plugin.MarshalProperties(outs, marshalOpts)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

func (p *commandProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	if err := supported(req.GetUrn()); err != nil {
		return nil, err
	}
	state, err := plugin.UnmarshalProperties(req.GetProperties(), marshalOpts)
	if err != nil {
		return nil, err
	}
	if _, err := p.execute(ctx, req.GetUrn(), state, "delete", state, false); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (p *commandProvider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

// execute runs one of the create/update/delete scripts and returns the resource's outputs:
// its inputs plus stdout and stderr.
func (p *commandProvider) execute(ctx context.Context, urn string, inputs resource.PropertyMap,
	which string, previous resource.PropertyMap, preview bool,
) (resource.PropertyMap, error) {
	outs := inputs.Copy()
	anySecret := false
	for _, v := range inputs {
		anySecret = anySecret || v.ContainsSecrets()
	}
	wrap := func(s string) resource.PropertyValue {
		v := resource.NewStringProperty(s)
		if anySecret {
			return resource.MakeSecret(v)
		}
		return v
	}
	script, known := stringProp(inputs, resource.PropertyKey(which))
	if preview || !known {
		if which == "delete" {
			return outs, nil
		}
		outs["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
		outs["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
		return outs, nil
	}
	if script == "" {
		if which == "delete" {
			return outs, nil
		}
		outs["stdout"], outs["stderr"] = wrap(""), wrap("")
		return outs, nil
	}
	env := map[string]string{}
	if ev, ok := plain(inputs["environment"]); ok && ev.IsObject() {
		for k, v := range ev.ObjectValue() {
			if s, ok := plain(v); ok && s.IsString() {
				env[string(k)] = s.StringValue()
			}
		}
	}
	var prevEnv map[string]string
	if addPrev, ok := plain(inputs["addPreviousOutputInEnv"]); !ok || !addPrev.IsBool() || addPrev.BoolValue() {
		prevEnv = map[string]string{}
		if s, _ := stringProp(previous, "stdout"); s != "" {
			prevEnv[envStdout] = s
		}
		if s, _ := stringProp(previous, "stderr"); s != "" {
			prevEnv[envStderr] = s
		}
	}
	stdin, _ := stringProp(inputs, "stdin")

	var stdout, stderr string
	var err error
	if typeOf(urn) == localCommand {
		stdout, stderr, err = runLocal(ctx, inputs, script, env, prevEnv, stdin)
	} else {
		stdout, stderr, err = runRemote(ctx, inputs, script, env, prevEnv, stdin)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w\nstdout: %s\nstderr: %s", which, err, stdout, stderr)
	}
	outs["stdout"], outs["stderr"] = wrap(stdout), wrap(stderr)
	return outs, nil
}

func runLocal(ctx context.Context, inputs resource.PropertyMap, script string,
	env, prevEnv map[string]string, stdin string,
) (string, string, error) {
	interpreter := []string{"/bin/sh", "-c"}
	if iv, ok := plain(inputs["interpreter"]); ok && iv.IsArray() && len(iv.ArrayValue()) > 0 {
		interpreter = nil
		for _, a := range iv.ArrayValue() {
			if s, ok := plain(a); ok && s.IsString() {
				interpreter = append(interpreter, s.StringValue())
			}
		}
	}
	args := append(append([]string{}, interpreter[1:]...), script)
	cmd := exec.CommandContext(ctx, interpreter[0], args...)
	if dir, _ := stringProp(inputs, "dir"); dir != "" {
		cmd.Dir = dir
	}
	cmd.Env = os.Environ()
	for k, v := range prevEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return strings.TrimSuffix(out.String(), "\n"), strings.TrimSuffix(errOut.String(), "\n"), err
}

type connection struct {
	host, user, password, privateKey, privateKeyPassword, agentSocketPath, hostKey string
	port, dialErrorLimit, perDialTimeout                                           int
}

func parseConnection(inputs resource.PropertyMap) (connection, error) {
	c := connection{user: "root", port: 22, dialErrorLimit: 10, perDialTimeout: 15}
	cv, ok := plain(inputs["connection"])
	if !ok || !cv.IsObject() {
		return c, errors.New("connection is required")
	}
	m := cv.ObjectValue()
	if v, ok := plain(m["proxy"]); ok && !v.IsNull() {
		return c, errors.New("connection.proxy is not implemented by this toolchain's stand-in provider")
	}
	for key, dst := range map[string]*string{
		"host": &c.host, "user": &c.user, "password": &c.password, "privateKey": &c.privateKey,
		"privateKeyPassword": &c.privateKeyPassword, "agentSocketPath": &c.agentSocketPath, "hostKey": &c.hostKey,
	} {
		if s, _ := stringProp(m, resource.PropertyKey(key)); s != "" {
			*dst = s
		}
	}
	for key, dst := range map[string]*int{"port": &c.port, "dialErrorLimit": &c.dialErrorLimit, "perDialTimeout": &c.perDialTimeout} {
		if v, ok := plain(m[resource.PropertyKey(key)]); ok && v.IsNumber() {
			*dst = int(v.NumberValue())
		}
	}
	if c.host == "" {
		return c, errors.New("connection.host is required")
	}
	return c, nil
}

func (c connection) clientConfig() (*ssh.ClientConfig, error) {
	var auth []ssh.AuthMethod
	if c.privateKey != "" {
		var signer ssh.Signer
		var err error
		if c.privateKeyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(c.privateKey), []byte(c.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(c.privateKey))
		}
		if err != nil {
			return nil, fmt.Errorf("connection.privateKey: %w", err)
		}
		auth = append(auth, ssh.PublicKeys(signer))
	}
	if c.password != "" {
		auth = append(auth, ssh.Password(c.password))
	}
	socket := c.agentSocketPath
	if socket == "" {
		socket = os.Getenv("SSH_AUTH_SOCK")
	}
	if socket != "" {
		if conn, err := net.Dial("unix", socket); err == nil {
			auth = append(auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		}
	}
	hostKeyCallback := ssh.InsecureIgnoreHostKey() //nolint:gosec // upstream's behaviour when hostKey is unset
	if c.hostKey != "" {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.hostKey))
		if err != nil {
			return nil, fmt.Errorf("connection.hostKey: %w", err)
		}
		hostKeyCallback = ssh.FixedHostKey(key)
	}
	return &ssh.ClientConfig{
		User: c.user, Auth: auth, HostKeyCallback: hostKeyCallback,
		Timeout: time.Duration(c.perDialTimeout) * time.Second,
	}, nil
}

func (c connection) dial(ctx context.Context) (*ssh.Client, error) {
	config, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(c.host, strconv.Itoa(c.port))
	for attempt := 1; ; attempt++ {
		client, err := ssh.Dial("tcp", addr, config)
		if err == nil {
			return client, nil
		}
		// A dialErrorLimit of -1 retries without limit, as upstream.
		if c.dialErrorLimit >= 0 && attempt >= c.dialErrorLimit {
			return nil, fmt.Errorf("dial %s after %d attempts: %w", addr, attempt, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(min(attempt, 5)) * time.Second):
		}
	}
}

func runRemote(ctx context.Context, inputs resource.PropertyMap, script string,
	env, prevEnv map[string]string, stdin string,
) (string, string, error) {
	conn, err := parseConnection(inputs)
	if err != nil {
		return "", "", err
	}
	client, err := conn.dial(ctx)
	if err != nil {
		return "", "", err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return "", "", err
	}
	defer session.Close()
	for k, v := range env {
		if err := session.Setenv(k, v); err != nil {
			return "", "", fmt.Errorf("setting environment variable %s over SSH failed (the server must "+
				"accept it with AcceptEnv, or prefix the command with VAR=value): %w", k, err)
		}
	}
	for k, v := range prevEnv {
		_ = session.Setenv(k, v) // upstream only warns when the server refuses these
	}
	if stdin != "" {
		session.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	session.Stdout, session.Stderr = &out, &errOut
	err = session.Run(script)
	return strings.TrimSuffix(out.String(), "\n"), strings.TrimSuffix(errOut.String(), "\n"), err
}

// plain strips a secret wrapper; ok is false for a missing, null or unknown value.
func plain(v resource.PropertyValue) (resource.PropertyValue, bool) {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	if v.V == nil || v.IsNull() || v.IsComputed() || v.IsOutput() && !v.OutputValue().Known {
		return v, false
	}
	if v.IsOutput() {
		return plain(v.OutputValue().Element)
	}
	return v, true
}

// stringProp returns a string input; known is false when the value is unknown (during preview).
func stringProp(m resource.PropertyMap, key resource.PropertyKey) (value string, known bool) {
	v, ok := m[key]
	if !ok {
		return "", true
	}
	if v.ContainsUnknowns() {
		return "", false
	}
	if p, ok := plain(v); ok && p.IsString() {
		return p.StringValue(), true
	}
	return "", true
}

func newID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
