"""Signed webhooks: lifecycle events on ``deployment-events`` become deliveries to the user's URL.

- :mod:`.payload`: which events a deployment asked for, and the JSON body of a delivery (public view, never a secret).
- :mod:`.secrets`: the per-tenant Standard Webhooks signing secret (sealed at rest; rotation with a 24 h overlap).
- :mod:`.records`: one Firestore record per delivery (create-if-absent: the dedupe), with every attempt.
- :mod:`.steps`: the webhooks function's steps: dispatch an event, attempt a delivery, redeliver.
"""
