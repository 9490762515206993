package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// addTimeout bounds one ADD (every iptables command and the conntrack
// flush): a runtime gives a sandbox minutes, a stuck xtables lock should
// fail the sandbox long before, so the kubelet retries.
const addTimeout = 2 * commandTimeout

// Versions are the CNI spec versions the plugin speaks. It must accept
// every version a primary conflist may declare, since that version applies
// to every plugin in the list (flannel and many others still write 0.3.1);
// CHECK exists from 0.4.0 and STATUS and GC from 1.1.0.
func Versions() version.PluginInfo {
	return version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
}

// About is what the plugin prints when run without CNI_COMMAND.
func About(v string) string {
	return "kube2ra-cni " + v + ": chained CNI plugin writing kube2ra's metadata redirect into each pod's network namespace"
}

// Commands runs the CNI verbs for one invocation; Stdout receives ADD's
// result.
type Commands struct {
	// Stdout receives the result ADD prints (the prevResult, unchanged).
	Stdout io.Writer
}

// Funcs are the verbs for skel.PluginMainFuncs.
func (c Commands) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: c.Add, Check: c.Check, Del: c.Del, Status: c.Status, GC: c.GC}
}

// chained is the part of the runtime's stdin around the plugin's own
// settings: the result of the plugins before it.
type chained struct {
	// conf validates cniVersion and prevResult with the CNI library.
	conf types.PluginConf
	// rawPrevResult is prevResult exactly as the runtime passed it.
	rawPrevResult json.RawMessage
}

// parseChained reads prevResult: kube2ra-cni only adds rules, so it
// must come after the plugin that made the pod's interface.
func parseChained(stdin []byte) (chained, error) {
	var c chained
	if err := json.Unmarshal(stdin, &c.conf); err != nil {
		return c, types.NewError(types.ErrDecodingFailure, "kube2ra-cni: network configuration is not valid JSON", err.Error())
	}
	var raw struct {
		PrevResult json.RawMessage `json:"prevResult"`
	}
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return c, types.NewError(types.ErrDecodingFailure, "kube2ra-cni: network configuration is not valid JSON", err.Error())
	}
	if len(bytes.TrimSpace(raw.PrevResult)) == 0 || bytes.Equal(bytes.TrimSpace(raw.PrevResult), []byte("null")) {
		return c, types.NewError(types.ErrInvalidNetworkConfig,
			"kube2ra-cni got no prevResult: it must be chained after the pod's primary CNI plugin",
			"put its entry last in the plugins list of the primary conflist (the kube2ra agent does this)")
	}
	if err := version.ParsePrevResult(&c.conf); err != nil {
		return c, types.NewError(types.ErrDecodingFailure, "kube2ra-cni: prevResult is not a CNI result of version "+c.conf.CNIVersion, err.Error())
	}
	c.rawPrevResult = raw.PrevResult
	return c, nil
}

// parseAll reads the plugin's settings and prevResult.
func parseAll(stdin []byte) (Config, chained, error) {
	ch, err := parseChained(stdin)
	if err != nil {
		return Config{}, ch, err
	}
	cfg, err := ParseConfig(stdin)
	if err != nil {
		return Config{}, ch, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	return cfg, ch, nil
}

// Add writes the rules into the pod's namespace and passes prevResult on
// unchanged. Any failure fails the sandbox (fail closed): the kubelet
// retries it rather than start a pod that could reach the node's
// metadata service.
func (c Commands) Add(args *skel.CmdArgs) error {
	cfg, ch, err := parseAll(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), addTimeout)
	defer cancel()
	if err := Apply(ctx, args.Netns, cfg); err != nil {
		return types.NewError(types.ErrInternal,
			"kube2ra-cni could not install the metadata redirect in pod sandbox "+args.ContainerID+", so the sandbox is refused",
			err.Error())
	}
	if _, err := c.Stdout.Write(ch.rawPrevResult); err != nil {
		return types.NewError(types.ErrIOFailure, "kube2ra-cni: writing the result", err.Error())
	}
	return nil
}

// Check verifies the rules in the pod's namespace.
func (c Commands) Check(args *skel.CmdArgs) error {
	cfg, _, err := parseAll(args.StdinData)
	if err != nil {
		return err
	}
	if err := Verify(args.Netns, cfg); err != nil {
		return types.NewError(types.ErrInternal, "kube2ra-cni: the metadata redirect in pod sandbox "+args.ContainerID+" is not as installed", err.Error())
	}
	return nil
}

// Del has nothing to undo: the rules live in the pod's namespace and go
// with it. It never fails, so a bad entry cannot block a pod's deletion.
func (c Commands) Del(*skel.CmdArgs) error { return nil }

// GC has nothing to collect: the plugin keeps no state outside the pods'
// namespaces.
func (c Commands) GC(*skel.CmdArgs) error { return nil }

// Status reports whether ADD can work: the entry is valid and the
// backend's iptables commands are on the node. When they are not, the
// runtime learns it before a sandbox fails.
func (c Commands) Status(args *skel.CmdArgs) error {
	cfg, err := ParseConfig(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if _, err := lookCommands(cfg.IPTablesBackend, families(cfg)); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("kube2ra-cni cannot install rules with the %s backend", cfg.IPTablesBackend), err.Error())
	}
	return nil
}
