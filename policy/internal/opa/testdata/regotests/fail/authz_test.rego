package envoy.authz_test

import data.envoy.authz

test_get_allowed if {
	authz.allow with input as {"attributes": {"request": {"http": {"method": "GET"}}}}
}

# Fails on purpose: POST is not in data.allowed_methods.
test_post_allowed if {
	authz.allow with input as {"attributes": {"request": {"http": {"method": "POST"}}}}
}
