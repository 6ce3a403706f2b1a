package main

// greeting is what banana says. Change it to see a new digest for banana only.
func greeting() string {
	return "banana: ripe"
}
