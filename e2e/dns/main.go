// Command coredns is the test bed's cluster DNS: CoreDNS, built from its Go
// module with only the plugins a cluster's DNS needs, serving the Services
// and pods of the test bed's apiserver. e2e/start-node.sh runs it on the
// node's bridge address, which the kubelet gives pods as their nameserver.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	// The order the plugins run in, as CoreDNS's plugin.cfg gives it.
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "cache", "kubernetes"}
	coremain.Run()
}
