package auth

import (
	"slices"
	"strings"
	"testing"
)

func TestParseTokensRefusesBadLinesByNumber(t *testing.T) {
	good := HashToken("s3cret")
	tests := []struct {
		name, file, want string
	}{
		{"too few fields", "# callers\n\nbackend rank\n", "tokens:3: 2 fields, want 3"},
		{"unknown role", "backend rank,admin " + good + "\n", `tokens:1: role "admin"`},
		{"empty role", "backend rank, " + good + "\n", `tokens:1: role ""`},
		{"plain token", "backend rank s3cret\n", `tokens:1: credential must start with "sha256:" or "cert:"`},
		{"short hash", "backend rank sha256:abcd\n", "tokens:1: sha256 has 4 hex digits, want 64"},
		{"not hex", "backend rank sha256:" + strings.Repeat("zz", 32) + "\n", "tokens:1: sha256: encoding/hex"},
		{"duplicate name", "a rank " + good + "\nb info cert:ops\na info cert:x\n", `tokens:3: caller "a" already on line 1`},
		{"duplicate token", "a rank " + good + "\nb info " + good + "\n", "tokens:2: the same token as line 1"},
		{"duplicate identity", "a rank cert:ops\nb info cert:ops\n", `tokens:2: certificate identity "ops" already on line 1`},
		{"empty identity", "a rank cert:\n", "tokens:1: empty certificate identity"},
		{"no callers", "# nobody\n", "tokens: no callers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTokens(strings.NewReader(tt.file), "tokens")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q quotes the token", err)
			}
		})
	}
}

func TestTokensFindCallers(t *testing.T) {
	file := strings.Join([]string{
		"# name  roles        credential",
		"backend rank " + HashToken("backend-token"),
		"catalog ingest,info " + HashToken("catalog-token"),
		"ops     info,info    cert:spiffe://cluster.local/ns/ops/sa/tools",
		"mesh    rank         cert:mesh-client",
	}, "\n")
	tokens, err := ParseTokens(strings.NewReader(file), "tokens")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		token     string
		certIDs   []string
		wantName  string
		wantRoles []Role
	}{
		{token: "backend-token", wantName: "backend", wantRoles: []Role{RoleRank}},
		{token: "catalog-token", wantName: "catalog", wantRoles: []Role{RoleIngest, RoleInfo}},
		{token: "backend-token ", wantName: ""}, // tokens match exactly
		{token: "", wantName: ""},
		{token: HashToken("backend-token"), wantName: ""}, // the hash is not the token
		{certIDs: []string{"spiffe://cluster.local/ns/ops/sa/tools", "tools"}, wantName: "ops", wantRoles: []Role{RoleInfo}},
		{certIDs: []string{"mesh-client"}, wantName: "mesh", wantRoles: []Role{RoleRank}},
		{certIDs: []string{"stranger"}, wantName: ""},
	}
	for _, tt := range tests {
		var c *Caller
		var ok bool
		if tt.certIDs != nil {
			c, ok = tokens.ByCertificate(tt.certIDs)
		} else {
			c, ok = tokens.ByToken(tt.token)
		}
		if got := ok; got != (tt.wantName != "") {
			t.Errorf("%q %v: found %v, want %v", tt.token, tt.certIDs, got, tt.wantName != "")
			continue
		}
		if ok && (c.Name != tt.wantName || !slices.Equal(c.Roles, tt.wantRoles)) {
			t.Errorf("%q %v: got %s %v, want %s %v", tt.token, tt.certIDs, c.Name, c.Roles, tt.wantName, tt.wantRoles)
		}
	}
}

func TestCallerHas(t *testing.T) {
	c := &Caller{Name: "catalog", Roles: []Role{RoleIngest, RoleInfo}}
	for _, tt := range []struct {
		role Role
		want bool
	}{{RoleIngest, true}, {RoleInfo, true}, {RoleRank, false}, {"", false}} {
		if got := c.Has(tt.role); got != tt.want {
			t.Errorf("Has(%q): got %v, want %v", tt.role, got, tt.want)
		}
	}
}

func TestHashTokenIsSHA256Hex(t *testing.T) {
	// printf %s s3cret | sha256sum, as go/README.md (Security) tells operators to run.
	if got, want := HashToken("s3cret"), "sha256:1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}
