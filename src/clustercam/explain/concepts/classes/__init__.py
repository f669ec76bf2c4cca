"""Class-level concepts: the channel groups a whole class shares (co-association of the
images' partitions, or NMF), their scores over the class's images, and run-level means."""
