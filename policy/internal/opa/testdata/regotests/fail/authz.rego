package envoy.authz

default allow := false

allow if input.attributes.request.http.method in data.allowed_methods
