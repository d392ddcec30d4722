package postgres

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/keyward/keyward/store"
)

// changes collects, during one Update, what other processes must hear
// about (see store.Change). A nil *changes (a View) records nothing.
type changes struct {
	licenses    map[string]bool
	newLicenses map[string]bool // licenses created in this transaction: nobody can have them cached
	rings       map[string]bool
	policies    map[string]bool
	products    bool
	revocations bool
	events      bool
	resignJobs  bool
}

func (c *changes) license(id string) {
	if c != nil {
		c.licenses = add(c.licenses, id)
	}
}

func (c *changes) createdLicense(id string) {
	if c != nil {
		c.newLicenses = add(c.newLicenses, id)
	}
}

func (c *changes) ring(r string) {
	if c != nil {
		c.rings = add(c.rings, r)
	}
}

func (c *changes) policy(productID string) {
	if c != nil {
		c.policies = add(c.policies, productID)
	}
}

func (c *changes) product() {
	if c != nil {
		c.products = true
	}
}

func (c *changes) revocation() {
	if c != nil {
		c.revocations = true
	}
}

func (c *changes) event() {
	if c != nil {
		c.events = true
	}
}

func (c *changes) resignJob() {
	if c != nil {
		c.resignJobs = true
	}
}

func add(m map[string]bool, k string) map[string]bool {
	if m == nil {
		m = map[string]bool{}
	}
	m[k] = true
	return m
}

// payload is the JSON of one notification (docs/postgres.md): short keys,
// since PostgreSQL bounds a payload to 8000 bytes.
type payload struct {
	Origin      string   `json:"o"`
	All         bool     `json:"a,omitempty"`
	Licenses    []string `json:"l,omitempty"`
	Rings       []string `json:"r,omitempty"`
	Policies    []string `json:"p,omitempty"`
	Products    bool     `json:"n,omitempty"`
	Revocations bool     `json:"v,omitempty"`
	Events      bool     `json:"e,omitempty"`
	ResignJobs  bool     `json:"j,omitempty"`
}

const (
	// maxPayload keeps a notification under PostgreSQL's 8000-byte limit.
	maxPayload = 7900
	// maxPayloads bounds the notifications of one transaction; a larger
	// change is announced as "everything changed".
	maxPayloads = 32
)

// payloads returns the notifications announcing c, none if c holds
// nothing others keep in memory. Licenses are spread over as many
// notifications as they need (at most maxPayloads).
func (c *changes) payloads(origin string) []string {
	var licenses []string
	for id := range c.licenses {
		if !c.newLicenses[id] {
			licenses = append(licenses, id)
		}
	}
	slices.Sort(licenses)
	first := payload{
		Origin: origin, Rings: slices.Sorted(maps.Keys(c.rings)), Policies: slices.Sorted(maps.Keys(c.policies)),
		Products: c.products, Revocations: c.revocations, Events: c.events, ResignJobs: c.resignJobs,
	}
	if len(licenses) == 0 && len(first.Rings) == 0 && len(first.Policies) == 0 && !first.Products && !first.Revocations && !first.Events && !first.ResignJobs {
		return nil
	}
	var out []string
	cur := first
	size := encodedLen(cur)
	for _, id := range licenses {
		n := len(id) + 3 // quotes and comma
		if size+n > maxPayload && len(cur.Licenses) > 0 {
			out = append(out, encode(cur))
			cur = payload{Origin: origin}
			size = encodedLen(cur)
		}
		cur.Licenses = append(cur.Licenses, id)
		size += n
	}
	out = append(out, encode(cur))
	tooLarge := len(out) > maxPayloads
	for _, p := range out {
		tooLarge = tooLarge || len(p) > maxPayload
	}
	if tooLarge {
		return []string{encode(payload{Origin: origin, All: true})}
	}
	return out
}

func encode(p payload) string {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // strings and bools always encode
	}
	return string(b)
}

func encodedLen(p payload) int { return len(encode(p)) + len(`,"l":[]`) }

// decode parses a notification payload into the change it announces and
// the origin that sent it.
func decode(s string) (store.Change, string, error) {
	var p payload
	if err := json.Unmarshal([]byte(s), &p); err != nil {
		return store.Change{}, "", fmt.Errorf("notification %.40q: %w", s, err)
	}
	return store.Change{
		All: p.All, Licenses: p.Licenses, Rings: p.Rings, Policies: p.Policies,
		Products: p.Products, Revocations: p.Revocations, Events: p.Events, ResignJobs: p.ResignJobs,
	}, p.Origin, nil
}
