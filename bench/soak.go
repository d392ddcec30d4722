package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// soakResult is what a soak run saw.
type soakResult struct {
	Validations  int64
	ServerErrors int64 // 5xx
	WrongAnswers int64
	Revoked      int
	Rotations    int
	FirstWrong   string
}

// soak validates a set of licenses at full speed from workers goroutines
// for d while another goroutine revokes licenses one by one and rotates the
// product's key. Every validation that starts after a revocation returned
// must answer REVOKED; every other license must stay VALID. base is the
// server URL, token an admin token, keys/ids the licenses (max_machines 0).
func soak(base, token, product string, keys, ids []string, workers int, d time.Duration) (soakResult, error) {
	var res soakResult
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers + 2}, Timeout: 10 * time.Second}
	revokedAt := make([]atomic.Int64, len(keys)) // unix nanos when the revoke call returned; 0 = live
	var validations, serverErrors, wrong atomic.Int64
	var firstWrong atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := i % len(keys)
				started := time.Now().UnixNano()
				resp, err := client.Post(base+"/v1/validate", "application/json", bytes.NewReader([]byte(`{"key":"`+keys[k]+`"}`)))
				if err != nil {
					serverErrors.Add(1)
					continue
				}
				var v struct{ Code string }
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				validations.Add(1)
				if resp.StatusCode >= 500 {
					serverErrors.Add(1)
					continue
				}
				_ = json.Unmarshal(body, &v)
				rev := revokedAt[k].Load()
				switch {
				case rev != 0 && started > rev && v.Code != "REVOKED":
					wrong.Add(1)
					firstWrong.CompareAndSwap(nil, fmt.Sprintf("license %d revoked, validation after it said %s", k, v.Code))
				case rev == 0 && v.Code != "VALID":
					// Not revoked when the request started… unless the revoke
					// is in flight; only a code other than VALID/REVOKED is wrong.
					if v.Code != "REVOKED" {
						wrong.Add(1)
						firstWrong.CompareAndSwap(nil, fmt.Sprintf("live license %d said %s (%d %s)", k, v.Code, resp.StatusCode, body))
					}
				}
			}
		}()
	}
	post := func(path string, in any) error {
		b, _ := json.Marshal(in)
		req, _ := http.NewRequest("POST", base+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 300 {
			data, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("POST %s: %s %s", path, resp.Status, data)
		}
		return nil
	}
	deadline := time.Now().Add(d)
	var err error
	for i := 0; time.Now().Before(deadline) && i < len(keys)/2; i++ {
		if err = post("/v1/licenses/"+ids[i]+"/revoke", map[string]string{"reason": "abuse"}); err != nil {
			break
		}
		revokedAt[i].Store(time.Now().UnixNano())
		res.Revoked++
		if i%10 == 9 {
			if err = post("/v1/products/"+product+"/keys", map[string]any{}); err != nil {
				break
			}
			res.Rotations++
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rest := time.Until(deadline); rest > 0 && err == nil {
		time.Sleep(rest)
	}
	close(stop)
	wg.Wait()
	res.Validations, res.ServerErrors, res.WrongAnswers = validations.Load(), serverErrors.Load(), wrong.Load()
	if s, ok := firstWrong.Load().(string); ok {
		res.FirstWrong = s
	}
	return res, err
}
