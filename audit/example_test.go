package audit_test

import (
	"fmt"
	"log"

	"github.com/keyward/keyward/audit"
	"github.com/keyward/keyward/keys"
)

// An auditor holds an export (`keyward audit export`), a checkpoint and
// the registry key from the JWKS, and needs nothing else: leaf i is line i.
// This is the example of docs/audit.md.
func Example_verifyExport() {
	export := [][]byte{
		[]byte(`{"seq":1,"time":"2026-03-14T15:09:26.535897000Z","actor":"tok_01jq","actor_name":"Ops \u003cteam\u003e","roles":["revoker"],"action":"license.revoke","target_type":"license","target_id":"lic_01jq","before":"suspended","after":"revoked","reason":"abuse","request_id":"9f86d081884c7d65","approval_ids":["apr_01jq"],"policy_version":3,"rule":"revocation.approvals","details":{"a":{"b":"é","y":[true,null]},"z":1}}`),
	}
	checkpoint := []byte("keyward\n1\ny5abNJTv7ccD6RmBvj+LqbvjhrzZVm9V9sdFoszCfts=\nkid kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k\n\n" +
		"— keyward eMrYc5DxTriqb8g1V0dqgshZKGLA2B6NeOA+O94TIUpbRYyKYfz+hWaiYbcFUG9bHWS9ncnuncRcmWaOIw5Fqp6TVws=\n")
	jwks := keys.JWKS{Keys: []keys.JWK{{Kty: "OKP", Crv: "Ed25519", X: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", Purpose: "registry"}}}

	c, err := audit.VerifyCheckpoint(checkpoint, jwks, "keyward")
	if err != nil {
		log.Fatal(err)
	}
	var tree audit.Tree
	for _, line := range export {
		if _, err := tree.Append(line); err != nil {
			log.Fatal(err)
		}
	}
	root, err := tree.Root(c.Size)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(root == c.Root, c.Size, c.KID)
	// Output: true 1 kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k
}
