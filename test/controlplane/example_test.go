package controlplane_test

import (
	"context"
	"fmt"
	"log"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kube2ra/kube2ra/test/controlplane"
)

// Start a control plane, list namespaces as admin, stop it. In a test package
// do the Start and Stop in TestMain (see the package documentation).
func Example() {
	cp, err := controlplane.Start(context.Background(), controlplane.Options{})
	if err != nil {
		log.Fatal(err) // says how to install etcd or kube-apiserver if missing
	}
	defer cp.Stop()

	client, err := kubernetes.NewForConfig(cp.AdminConfig())
	if err != nil {
		log.Fatal(err)
	}
	namespaces, err := client.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(namespaces.Items) > 0, "started in", cp.StartupDuration)
}
