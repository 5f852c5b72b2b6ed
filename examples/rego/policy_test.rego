package envoy.authz_test

import data.envoy.authz

planner := "spiffe://mesh.local/ns/default/sa/planner"

viewer := "spiffe://mesh.local/ns/default/sa/viewer"

request(principal, method, path, body) := {
	"attributes": {
		"source": {"principal": principal},
		"request": {"http": {"method": method, "path": path}},
	},
	"parsed_path": split(trim_prefix(path, "/"), "/"),
	"parsed_body": body,
}

task(priority) := {
	"type": "task.request",
	"id": "5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11",
	"sender": "planner",
	"task": {"name": "summarize", "priority": priority},
}

test_planner_posts_valid_task if {
	authz.allow with input as request(planner, "POST", "/v1/tasks", task(3))
}

test_viewer_cannot_post if {
	not authz.allow with input as request(viewer, "POST", "/v1/tasks", task(3))
}

test_priority_above_nine_denied if {
	not authz.allow with input as request(planner, "POST", "/v1/tasks", task(12))
}

test_viewer_lists_tasks if {
	authz.allow with input as request(viewer, "GET", "/v1/tasks", null)
}

test_unknown_route_denied if {
	not authz.allow with input as request(planner, "DELETE", "/v1/tasks", null)
}

test_unknown_caller_denied if {
	not authz.allow with input as request("spiffe://mesh.local/ns/default/sa/stranger", "GET", "/v1/tasks", null)
}
