package policy

// NewOPARegoEngine lets the external tests build revisions around an
// engine of their own, as a RegoBundle does with each fetched bundle.
var NewOPARegoEngine = newOPARegoEngine
