package keyward

// JWS "typ" values of Keyward's tokens.
const (
	TypCertificate = "license+jwt"
	TypLease       = "lease+jwt"
)

// CertificateClaims are the claims of a license certificate (spec 3): what an
// offline client needs to enforce a license until exp.
type CertificateClaims struct {
	Issuer    string      `json:"iss"`
	Subject   string      `json:"sub"` // license id
	Audience  string      `json:"aud"` // product name
	IssuedAt  int64       `json:"iat"`
	NotBefore int64       `json:"nbf"`
	Expiry    int64       `json:"exp"` // certificate expiry: policy certificateTTL, capped by the license's own expiry
	ID        string      `json:"jti"`
	License   LicenseInfo `json:"lic"`
}

// LicenseInfo is the "lic" claim.
type LicenseInfo struct {
	Policy       int      `json:"policy"` // policy version; 0 = built-in default
	Entitlements []string `json:"entitlements"`
	ExpiresAt    *int64   `json:"expires_at"` // license expiry (unix seconds), null = perpetual
	MaxMachines  int      `json:"max_machines"`
	Holder       string   `json:"holder"`
}

// LeaseClaims are the claims of a lease token: a short-lived proof that a
// license was valid for one machine at iat.
type LeaseClaims struct {
	Issuer      string `json:"iss"`
	Subject     string `json:"sub"` // license id
	Audience    string `json:"aud"` // product name
	IssuedAt    int64  `json:"iat"`
	NotBefore   int64  `json:"nbf"`
	Expiry      int64  `json:"exp"`
	ID          string `json:"jti"`
	Machine     string `json:"mid"` // machine id
	Fingerprint string `json:"fpr"` // machine fingerprint as sent by the client
}
