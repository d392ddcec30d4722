package licensekey_test

import (
	"errors"
	"fmt"

	"github.com/keyward/keyward/licensekey"
)

func ExampleGenerate() {
	k, err := licensekey.Generate(nil) // crypto/rand
	if err != nil {
		panic(err)
	}
	// Show k.String() to the holder once; store a keyed hash and k.Prefix().
	back, err := licensekey.Parse(k.String())
	fmt.Println(len(k), len(k.Prefix()), back == k, err)
	// Output: 33 9 true <nil>
}

func ExampleParse() {
	// Lower case, spaces for dashes, and O/l/I typed for 0/1.
	k, err := licensekey.Parse("  kw1 ddjqj xvle9 j2ov3 9cdjp wwv5t ")
	fmt.Println(k, err)
	fmt.Println(k.Prefix())

	// One symbol mistyped (V for W in the last group).
	_, err = licensekey.Parse("KW1-DDJQJ-XV1E9-J20V3-9CDJP-VWV5T")
	fmt.Println(errors.Is(err, licensekey.ErrChecksum))

	// U is not in the alphabet.
	_, err = licensekey.Parse("KW1-DDJQU-XV1E9-J20V3-9CDJP-WWV5T")
	fmt.Println(err)
	// Output:
	// KW1-DDJQJ-XV1E9-J20V3-9CDJP-WWV5T <nil>
	// KW1-DDJQJ
	// true
	// licensekey: malformed key: invalid character 'U' at position 9
}
