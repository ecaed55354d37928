// Package azure holds what the Azure drivers (azurelb, azureappgw,
// azurefd) share: how they reach Azure Resource Manager through the
// official SDK (credentials, retries on 429 and 5xx per Retry-After,
// polling of long-running operations), the ETag guard and the drift it
// reports, the confirmation of a switch by probing the VIP itself, and the
// description of a change for a dry run.
package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/vipswap/vipswap/route"
)

// Conn says how a driver reaches Azure Resource Manager.
type Conn struct {
	// SubscriptionID and ResourceGroup hold the resource.
	SubscriptionID string
	ResourceGroup  string
	// Endpoint is ARM's base URL; "" is Azure's public cloud.
	Endpoint string
	// Credential, if set, replaces DefaultAzureCredential (tests, or a
	// program that has its own).
	Credential azcore.TokenCredential
	// Transport, if set, sends the requests (tests: a client that trusts
	// the stand-in's certificate).
	Transport policy.Transporter
	// PollEvery is how often a long-running operation is polled when
	// Azure gives no Retry-After. Default 2s (the SDK allows no less than
	// 1s outside tests).
	PollEvery time.Duration
	// Retries is how many times a request answered 429 or 5xx (or not
	// answered) is tried again, waiting what Retry-After says. Default 4.
	Retries int
	// OperationTimeout bounds one write, its long-running operation
	// polled to the end included. Default 5m.
	OperationTimeout time.Duration
	// RetryEvery is how often a table the resource does not show (a
	// failed write, drift, a VIP that did not converge) is applied
	// again. Default 30s.
	RetryEvery time.Duration
}

// publicAudience is the token audience of Azure Resource Manager.
const publicAudience = "https://management.core.windows.net/"

// Options returns the SDK's client options for c, and the credential.
func (c Conn) Options() (azcore.TokenCredential, *arm.ClientOptions, error) {
	opts := &arm.ClientOptions{}
	opts.Retry = policy.RetryOptions{MaxRetries: int32(c.retries()), RetryDelay: time.Second, MaxRetryDelay: time.Minute}
	if c.Transport != nil {
		opts.Transport = c.Transport
	}
	opts.Telemetry.Disabled = true
	if c.Endpoint != "" {
		opts.Cloud = cloud.Configuration{
			ActiveDirectoryAuthorityHost: cloud.AzurePublic.ActiveDirectoryAuthorityHost,
			Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Audience: publicAudience, Endpoint: c.Endpoint},
			},
		}
	}
	// vipswap changes only resources that exist; registering resource
	// providers is not its business (nor its permission).
	opts.DisableRPRegistration = true
	// Every request, a poll of a long-running operation included (its URL
	// is what the answer said), goes to ARM's host or not at all: the
	// bearer token is ARM's, never another host's.
	arm := c.Endpoint
	if arm == "" {
		arm = cloud.AzurePublic.Services[cloud.ResourceManager].Endpoint
	}
	u, err := url.Parse(arm)
	if err != nil || u.Host == "" {
		return nil, nil, fmt.Errorf("azure endpoint %q is not a URL", arm)
	}
	credOpts := opts.ClientOptions // the credential asks its own hosts (Entra ID, the identity endpoint)
	opts.PerCallPolicies = append(opts.PerCallPolicies, onlyHost{host: hostOf(u)})
	cred := c.Credential
	if cred == nil {
		dc, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: credOpts})
		if err != nil {
			return nil, nil, fmt.Errorf("azure credentials: %s", FirstLine(err.Error()))
		}
		cred = dc
	}
	return checkedCredential{cred}, opts, nil
}

// onlyHost refuses a request to any host but ARM's, before the bearer
// token is put on it.
type onlyHost struct{ host string }

func (o onlyHost) Do(req *policy.Request) (*http.Response, error) {
	if h := hostOf(req.Raw().URL); h != o.host {
		return nil, fmt.Errorf("refused to send Azure credentials to %s: not Azure Resource Manager (%s); an answer named that host", h, o.host)
	}
	return req.Next()
}

// hostOf is u's host, lower case, without https' default port.
func hostOf(u *url.URL) string {
	h := strings.ToLower(u.Host)
	return strings.TrimSuffix(h, ":443")
}

// CredentialError is a credential's failure to give a token.
type CredentialError struct{ Err error }

func (e *CredentialError) Error() string {
	return "azure credentials: " + FirstLine(e.Err.Error()) + " (DefaultAzureCredential tries AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, workload identity, managed identity, then az login)"
}

func (e *CredentialError) Unwrap() error { return e.Err }

// checkedCredential marks a credential's errors as such, so that they
// read as what they are, in one line.
type checkedCredential struct{ azcore.TokenCredential }

func (c checkedCredential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	t, err := c.TokenCredential.GetToken(ctx, o)
	if err != nil {
		return t, &CredentialError{Err: err}
	}
	return t, nil
}

func (c Conn) retries() int {
	if c.Retries == 0 {
		return 4
	}
	return c.Retries
}

// PollOptions are the options a driver polls long-running operations
// with.
func (c Conn) PollOptions() *runtime.PollUntilDoneOptions {
	every := c.PollEvery
	if every == 0 {
		every = 2 * time.Second
	}
	return &runtime.PollUntilDoneOptions{Frequency: every}
}

// OpTimeout is OperationTimeout with its default.
func (c Conn) OpTimeout() time.Duration {
	if c.OperationTimeout == 0 {
		return 5 * time.Minute
	}
	return c.OperationTimeout
}

// IfMatch returns ctx whose requests carry If-Match: etag, so ARM refuses
// the write (412) when the resource changed since it was read.
func IfMatch(ctx context.Context, etag string) context.Context {
	return policy.WithHTTPHeader(ctx, http.Header{"If-Match": []string{etag}})
}

// IsStale reports whether err is ARM's refusal of a write whose If-Match
// no longer holds.
func IsStale(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusPreconditionFailed
}

// Explain turns an SDK error into one line: the operation, the status and
// ARM's error code, or the credential's failure.
func Explain(op string, err error) error {
	var re *azcore.ResponseError
	var ce *CredentialError
	switch {
	case errors.As(err, &re):
		code := re.ErrorCode
		if code == "" {
			code = http.StatusText(re.StatusCode)
		}
		return fmt.Errorf("%s: Azure answered %d %s", op, re.StatusCode, code)
	case errors.As(err, &ce):
		return fmt.Errorf("%s: %v", op, ce)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: did not finish in time (%v)", op, err)
	}
	return fmt.Errorf("%s: %s", op, FirstLine(err.Error()))
}

// FirstLine returns s's first non-empty line, trimmed, at most 300 bytes:
// the SDK's credential errors run to dozens of lines, a log line and an
// answer take one.
func FirstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.Trim(l, "-= ") == "" {
			continue
		}
		if len(l) > 300 {
			l = l[:300] + "…"
		}
		return l
	}
	return "(no detail)"
}

// DriftError says the resource changed under vipswap in a way it did not
// expect: nothing was written.
type DriftError struct {
	// Resource names it ("load balancer api-prod-vmss-lb").
	Resource string
	// What says what differs from what vipswap expected.
	What string
}

func (e *DriftError) Error() string {
	return fmt.Sprintf("%s changed outside vipswap (%s); nothing was overwritten: check who changed it, then apply again (vipswap reload, or the next change)", e.Resource, e.What)
}

// Change is one field a switch changes, for a dry run.
type Change struct {
	// Resource names the resource ("load balancer api-prod-vmss-lb").
	Resource string
	// Field is the field's path ("probes[http-probe].requestPath").
	Field string
	// Old and New are its values.
	Old, New string
	// Az is the equivalent Azure CLI command.
	Az string
}

// String is the change as a dry run prints it, its az command on a second
// line.
func (c Change) String() string {
	s := fmt.Sprintf("%s: %s %q -> %q", c.Resource, c.Field, c.Old, c.New)
	if c.Az != "" {
		s += "\n    " + c.Az
	}
	return s
}

// Lines renders changes for a dry run.
func Lines(cs []Change) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.String())
	}
	return out
}

// Whole returns the one slot l sends everything to, or "" when l sends
// nowhere; a split (a shift, a rollout) is an error naming the driver,
// which can only swap whole slots.
func Whole(driver string, weights []route.Weighted) (string, error) {
	var slots []string
	for _, w := range weights {
		if w.Weight > 0 {
			slots = append(slots, w.Slot)
		}
	}
	switch len(slots) {
	case 0:
		return "", nil
	case 1:
		return slots[0], nil
	}
	return "", fmt.Errorf("%s switches whole slots and cannot split traffic between %s: shift and rollout need azure_frontdoor (or vipswap's own listeners)", driver, strings.Join(slots, " and "))
}

// Quote quotes s for a POSIX shell, as az scripts write values.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
