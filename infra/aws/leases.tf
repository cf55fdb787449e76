# Scale-out: the Kinesis lease table that several `saip ingest run` consumers share
# (saip_ingestion.backends.kinesis_leases: one item per shard with owner, fencing counter,
# checkpoint and write intent). Encrypted with the storage key, point-in-time recovery on
# (a checkpoint rolled back by mistake can be restored), deletion protection on; only the consumer
# role may read or write it, with exactly the four calls the consumers make.

locals {
  lease_table_name = "${var.prefix}-kinesis-leases"
  lease_table_arn  = "arn:${local.partition}:dynamodb:${local.region}:${local.account_id}:table/${local.lease_table_name}"
}

resource "aws_dynamodb_table" "leases" {
  name         = local.lease_table_name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "lease_key"
  # unsafe_force_destroy_buckets is the throwaway-stack switch: it also lets destroy delete this table.
  deletion_protection_enabled = !var.unsafe_force_destroy_buckets

  attribute {
    name = "lease_key"
    type = "S"
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = module.storage_key.key_arn
  }

  point_in_time_recovery {
    enabled = true
  }

  tags = local.tags
}
