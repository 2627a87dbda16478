"""Storage layer: S3 buckets, EFS and FSx for Lustre, and who may read and write them."""
