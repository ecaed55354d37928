package azure

import (
	"context"
	"os"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/vipswap/vipswap/driver/azure/armstandin"
)

// The rule that sends requests to ARM's host only is ARM's clients', not
// the credential's: DefaultAzureCredential still reaches its identity
// endpoint (a managed identity's, here on 127.0.0.1).
func TestCredentialReachesItsOwnHost(t *testing.T) {
	idp := armstandin.NewIdentityEndpoint()
	defer idp.Close()
	for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT", "MSI_SECRET"} {
		t.Setenv(k, "") // restored when the test ends
		os.Unsetenv(k)
	}
	t.Setenv("IDENTITY_ENDPOINT", idp.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", armstandin.IdentityHeader)
	cred, _, err := Conn{SubscriptionID: armstandin.Sub, Endpoint: "https://arm.example.net"}.Options()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{publicAudience + ".default"}})
	if err != nil || tok.Token != "standin-msi-token" {
		t.Fatalf("token from the identity endpoint: %q, %v", tok.Token, err)
	}
}
