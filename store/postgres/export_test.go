package postgres

// Hooks for the tests of this package.

// ListenerPID returns the backend pid of the listener's connection (0 when
// not connected), so a test can terminate it.
func (db *DB) ListenerPID() uint32 { return db.listenPID.Load() }

// LockKey returns the advisory lock key TryLock uses for name.
func (db *DB) LockKey(name string) int64 { return db.lockKey("lock:" + name) }

// Translate exposes translate.
var Translate = translate
