"""Operator-facing commands: ``signet status``, ``signet renew`` and ``signet inspect``.

They answer the questions people ask at 3 a.m. (is everything Ready, what exactly did
Signet put in that Secret, can I force a fresh certificate now) with the same Kubernetes
client and kubeconfig rules as kubectl, so no extra credentials are needed. None of them
ever prints private key material: keys are loaded only to check they match.
"""
