// Package controlplane runs a real Kubernetes control plane for tests: etcd
// (Debian's etcd-server) and kube-apiserver (built from the Go module proxy by
// hack/build-kube.sh), on free ports of BindAddress, in a temporary
// directory under $TMPDIR/kube2ra-controlplane.
//
// What tests get:
//   - TLS serving with a throwaway CA generated in Go; client-certificate
//     authentication (AdminConfig is in group system:masters; UserConfig and
//     UserKubeconfig issue certificates for any user and groups).
//   - --authorization-mode=Node,RBAC: a user without bindings is forbidden.
//   - No controller-manager, scheduler or kubelet. Pods stay where the test
//     puts them: set spec.nodeName on create and status (podIP, podIPs,
//     phase) through the status subresource (UpdateStatus). The ServiceAccount
//     admission plugin is disabled, so pods need no "default" ServiceAccount;
//     tests that need a ServiceAccount create the object themselves, and
//     TokenRequest works (a signing key is configured). Nothing garbage-
//     collects or deletes namespaces' contents.
//   - Faults on the same etcd: RestartAPIServer (down and up again), and
//     RotateServiceAccountKeys with keys from NewServiceAccountKey (a
//     token signer rotation, each key's kid known to the test).
//
// Processes run in their own process groups with Pdeathsig SIGKILL, so a test
// binary that dies takes them along; Start also removes directories and
// process groups left by test processes that no longer exist. Start errors
// say what to do: how to install a missing binary (hack/install-test-deps.sh),
// which port is in use, or the tail of a crashed process's log.
//
// Use one control plane per test package from TestMain:
//
//	var cp *controlplane.ControlPlane
//
//	func TestMain(m *testing.M) {
//		var err error
//		cp, err = controlplane.Start(context.Background(), controlplane.Options{})
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		code := m.Run()
//		if err := cp.Stop(); err != nil {
//			fmt.Fprintln(os.Stderr, err)
//		}
//		os.Exit(code)
//	}
//
// and in tests kubernetes.NewForConfig(cp.AdminConfig()). Isolate tests by
// namespace. Such test files need the "integration" build tag.
package controlplane
