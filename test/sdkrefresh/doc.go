// Package sdkrefresh tests that the AWS SDKs' own credential refresh logic,
// driven on a fake clock against kube2ra's proxy and credential cache, never
// signs a request with expired credentials (docs/design.md, "Credential
// lifetime and the SDKs").
package sdkrefresh
