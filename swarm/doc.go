// Package swarm will own file distribution: bencoded manifests, the piece
// store, the rarest-first piece picker, the tit-for-tat choker, the BEP 3
// wire protocol over overlay streams, rate limits and resume.
package swarm
