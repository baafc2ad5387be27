"""The fault suite: each test breaks something real and checks the documented outcome."""
