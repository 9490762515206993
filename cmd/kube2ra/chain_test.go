package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/kube2ra/kube2ra/credentials"
	"github.com/kube2ra/kube2ra/k8s"
)

// TestPodRequestOfATargetRole: where tags, external ID and session names
// go for direct and chained requests, by source and tag mode.
func TestPodRequestOfATargetRole(t *testing.T) {
	const (
		first  = "arn:aws:iam::111122223333:role/first"
		target = "arn:aws:iam::444455556666:role/target"
	)
	pod := &k8s.Pod{UID: "uid-1", Namespace: "team-a", Name: "web-0", ServiceAccount: "web"}
	direct := k8s.Role{ARN: first}
	chained := k8s.Role{ARN: first, TargetARN: target}
	raNode := podRequestRules{naming: credentials.SessionNamingNone, node: "node-a", region: "eu-central-1"}
	eksTags := credentials.TagsEKS.Tags(credentials.PodTags{Namespace: "team-a", Pod: "web-0", PodUID: "uid-1", ServiceAccount: "web", Node: "node-a", ClusterName: "prod"})
	for _, tc := range []struct {
		name    string
		rules   podRequestRules
		role    k8s.Role
		want    credentials.Request
		wantErr string
	}{
		{name: "roles anywhere direct: no tags on CreateSession",
			rules: with(raNode, func(r *podRequestRules) { r.tags, r.clusterName = credentials.TagsEKS, "prod" }), role: direct,
			want: credentials.Request{RoleARN: first}},
		{name: "roles anywhere chained with EKS tags: tags on the target hop, no external ID",
			rules: with(raNode, func(r *podRequestRules) { r.tags, r.clusterName, r.transitiveTags = credentials.TagsEKS, "prod", true }), role: chained,
			want: credentials.Request{RoleARN: first, TargetRoleARN: target, TargetSessionName: "node-a", Tags: eksTags, TransitiveTags: true}},
		{name: "tags off: EKS's external ID with the agent's region and the first role's account",
			rules: with(raNode, func(r *podRequestRules) { r.clusterName = "prod" }), role: chained,
			want: credentials.Request{RoleARN: first, TargetRoleARN: target, TargetSessionName: "node-a", TargetExternalID: "eu-central-1/111122223333/prod/team-a/web"}},
		{name: "tags off with a cluster ARN: its region and account",
			rules: with(raNode, func(r *podRequestRules) {
				r.clusterName, r.clusterARN = "prod", "arn:aws:eks:us-east-1:999988887777:cluster/prod"
			}), role: chained,
			want: credentials.Request{RoleARN: first, TargetRoleARN: target, TargetSessionName: "node-a", TargetExternalID: "us-east-1/999988887777/prod/team-a/web"}},
		{name: "tags off without a cluster name is refused, naming the flag",
			rules: raNode, role: chained, wantErr: "--cluster-name"},
		{name: "sts pod naming: both hops named after the pod, kube2ra tags on the target only",
			rules: podRequestRules{naming: credentials.SessionNamingPod, node: "node-a", tags: credentials.TagsKube2ra, directTags: true}, role: chained,
			want: credentials.Request{RoleARN: first, SessionName: "team-a.web-0", TargetRoleARN: target, TargetSessionName: "team-a.web-0",
				Tags: credentials.SessionTags("team-a", "web-0", "web", "node-a")}},
		{name: "the session policy goes on the target hop",
			rules: with(raNode, func(r *podRequestRules) { r.tags, r.clusterName = credentials.TagsEKS, "prod" }), role: k8s.Role{ARN: first, TargetARN: target, SessionPolicy: "{}"},
			want: credentials.Request{RoleARN: first, TargetRoleARN: target, TargetSessionName: "node-a", Tags: eksTags, Policy: "{}"}},
		{name: "sts direct keeps its tags",
			rules: podRequestRules{naming: credentials.SessionNamingPod, node: "node-a", tags: credentials.TagsKube2ra, directTags: true}, role: direct,
			want: credentials.Request{RoleARN: first, SessionName: "team-a.web-0", Tags: credentials.SessionTags("team-a", "web-0", "web", "node-a")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.rules.request(pod, tc.role)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				if f, ok := credentials.ActionableFailure(err); !ok || f.Reason != credentials.ReasonTargetRoleInvalid {
					t.Errorf("no TargetRoleInvalid Event for %v", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("request = %+v, %v\nwant      %+v", got, err, tc.want)
			}
		})
	}
}

func with(r podRequestRules, f func(*podRequestRules)) podRequestRules {
	f(&r)
	return r
}
