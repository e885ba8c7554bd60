// Package deploy holds webapp's deployment files, Containerfile and
// kubernetes/webapp.yaml, and their checks. It is its own module so that
// the Kubernetes API types it decodes the manifests into stay out of
// baton's go.mod.
//
// No offline tool validates Kubernetes manifests here: `kubectl apply
// --dry-run=client` (with or without --validate=false) asks an API server
// for its discovery document and OpenAPI schema, and kubeconform is not
// installable. The test decodes every document strictly (unknown or
// duplicate fields are errors) into the k8s.io/api types of its kind,
// checks the settings against one another (selectors, ports, probe paths,
// the termination timing), and runs the image's binary with the
// Deployment's arguments to prove the probes' paths answer as the
// comments say.
package deploy
