// Empty stand-in: the module proxy refuses github.com/Venafi/vcert/v5, and the controllers
// built here never import the Venafi issuer, so only a go.mod is needed to load the graph.
module github.com/Venafi/vcert/v5

go 1.22
