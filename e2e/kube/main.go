// Command q8s-kube is the Kubernetes control plane of q8s's tests in one
// binary, built from Go modules: it runs as the component its name (or its
// first argument) says, with the same code as the upstream release binaries.
//
//	kube-apiserver           k8s.io/kubernetes/cmd/kube-apiserver
//	kube-controller-manager  k8s.io/kubernetes/cmd/kube-controller-manager
//	kube-scheduler           k8s.io/kubernetes/cmd/kube-scheduler
//	kubelet                  k8s.io/kubernetes/cmd/kubelet
//	kube-proxy               k8s.io/kubernetes/cmd/kube-proxy
//	kubectl                  k8s.io/kubectl/pkg/cmd
//	etcd                     go.etcd.io/etcd/server/v3/etcdmain
//
// e2e/build-testbed.sh builds it and links each name to it.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	_ "time/tzdata" // time zones for CronJob, as the upstream binaries have

	"go.etcd.io/etcd/server/v3/etcdmain"
	_ "k8s.io/client-go/plugin/pkg/client/auth" // kubectl's client auth plugins
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kubeproxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// commands maps each name to the main function of that component.
var commands = map[string]func(){
	"kube-apiserver": func() {
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	},
	"kube-controller-manager": func() {
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	},
	"kube-scheduler": func() {
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	},
	"kubelet": func() {
		os.Exit(cli.Run(kubelet.NewKubeletCommand(context.Background())))
	},
	"kube-proxy": func() {
		os.Exit(cli.Run(kubeproxy.NewProxyCommand()))
	},
	"kubectl": func() {
		logs.GlogSetter(kubectl.GetLogVerbosity(os.Args)) // nolint:errcheck
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	},
	"etcd": func() {
		etcdmain.Main(os.Args)
	},
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := commands[name]; !ok && len(os.Args) > 1 {
		// q8s-kube kubectl get pods: the component runs as if called by its name.
		name = os.Args[1]
		os.Args = os.Args[1:]
	}
	run, ok := commands[name]
	if !ok {
		names := make([]string, 0, len(commands))
		for n := range commands {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: q8s-kube COMMAND [ARGS...], or call it through a link named COMMAND\ncommands: %s\n", strings.Join(names, ", "))
		os.Exit(2)
	}
	run()
}
