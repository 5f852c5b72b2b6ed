package envoy.authz_test

import data.envoy.authz

test_get_allowed if {
	authz.allow with input as {"attributes": {"request": {"http": {"method": "GET"}}}}
}

test_post_denied if {
	not authz.allow with input as {"attributes": {"request": {"http": {"method": "POST"}}}}
}
