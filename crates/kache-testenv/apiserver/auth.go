package main

import (
	"context"
	"strings"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/token/tokenfile"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// newAuthenticator reads kube-apiserver's static token file
// (`token,user,uid[,"group1,group2"]`). Requests without a known token are refused
// with 401: there is no anonymous user.
func newAuthenticator(tokenFile string) (authenticator.Request, error) {
	tokens, err := tokenfile.NewCSV(tokenFile)
	if err != nil {
		return nil, err
	}
	// Like kube-apiserver, every authenticated user is also in system:authenticated.
	return group.NewAuthenticatedGroupAdder(bearertoken.New(tokens)), nil
}

// publicPaths are the non-resource paths any authenticated user may GET: what
// kube-apiserver's system:discovery and system:public-info-viewer roles allow.
var publicPaths = []string{
	"/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*",
	"/version", "/version/", "/healthz", "/readyz", "/livez",
}

// operatorsGroup's members may do everything too, but unlike system:masters they are
// not exempt from the limits on requests in flight: what an operator's service account
// with wide rights is to a real cluster (kube-apiserver's tests bind it to cluster-admin).
const operatorsGroup = "kache:operators"

// authorize lets members of system:masters (the loopback client is one of them) and of
// kache:operators do everything, and every other user only read discovery, version and
// health paths, so any resource request of theirs is refused with 403.
func authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	if u := a.GetUser(); u != nil {
		for _, g := range u.GetGroups() {
			if g == user.SystemPrivilegedGroup || g == operatorsGroup {
				return authorizer.DecisionAllow, "", nil
			}
		}
	}
	if !a.IsResourceRequest() && a.GetVerb() == "get" {
		for _, p := range publicPaths {
			if a.GetPath() == p || strings.HasSuffix(p, "*") && strings.HasPrefix(a.GetPath(), strings.TrimSuffix(p, "*")) {
				return authorizer.DecisionAllow, "", nil
			}
		}
	}
	return authorizer.DecisionNoOpinion, "only members of " + user.SystemPrivilegedGroup + " may do this", nil
}
