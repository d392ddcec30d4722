package authority

// EventTypes returns every outbox event type the authority emits, sorted:
// the types webhook endpoints may subscribe to (besides "*" and
// "prefix.*"). A change that emits a new type MUST add it here;
// TestEventTypesComplete reads this package's source and fails otherwise.
func EventTypes() []string {
	return []string{
		"approval.cancelled",
		"approval.denied",
		"approval.expired",
		"approval.granted",
		"approval.requested",
		"exception.activated",
		"exception.denied",
		"exception.requested",
		"key.activated",
		"key.compromised",
		"key.created",
		"key.destroyed",
		"key.resign_completed",
		"key.resign_progress",
		"key.resign_started",
		"key.retired",
		"key.rolled_back",
		"key.rotation_scheduled",
		"license.auto_suspend_ceiling",
		"license.auto_suspended",
		"license.expired",
		"license.expiring",
		"license.issued",
		"license.reinstated",
		"license.reissued",
		"license.retired",
		"license.revoked",
		"license.signal_recorded",
		"license.suspended",
		"machine.activated",
		"machine.deactivated",
		"mfa.enrolled",
		"mfa.reset",
		"policy.applied",
		"product.created",
		"token.created",
		"token.revoked",
		"webhook.created",
		"webhook.delivery_replayed",
		"webhook.disabled",
		"webhook.enabled",
		"webhook.removed",
		"webhook.secret_rotated",
	}
}
