"""The public REST API (the intake function): routes, auth, rate limit, and the create/read/list/delete steps."""
