# Secure ingestion on AWS: two customer-managed keys (one for the services' at-rest encryption, one
# for saip's envelope encryption), the Kinesis stream and its Firehose archive, the landing /
# quarantine / artifacts buckets plus their access-log bucket, VPC endpoints with policies, and the
# producer / consumer / trainer roles. See README.md for the controls each piece implements.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  tags       = merge(var.tags, { "saip:prefix" = var.prefix, "saip:managed-by" = "terraform" })

  # ARNs built from names, so key policies can name them before the resources exist (no cycles).
  stream_arn = "arn:${local.partition}:kinesis:${local.region}:${local.account_id}:stream/${var.prefix}-records"
  bucket_arns = { for b in ["landing", "quarantine", "artifacts"] :
    b => "arn:${local.partition}:s3:::${var.prefix}-${b}"
  }
  data_buckets = toset(["landing", "quarantine", "artifacts"])

  role_arns = {
    producer = module.producer_role.arn
    consumer = module.consumer_role.arn
    trainer  = module.trainer_role.arn
  }
  data_key_context = { for k, v in var.encryption_context : k => [v] }

  # saip binds "saip:purpose" into every envelope's KMS encryption context
  # (saip_ingestion.engine / .quarantine): the consumer may unwrap only its own batches (crash
  # recovery re-reads them) and quarantine entries (show / release).
  consumer_decrypt_context = merge(local.data_key_context, { "saip:purpose" = ["ingest-accepted", "ingest-quarantine"] })

  # Only saip's accepted batches: the landing bucket also holds the raw Firehose archive
  # (firehose.object_prefix), which bypassed validation, provenance and envelope encryption.
  trainer_landing_objects = "${local.bucket_arns.landing}/accepted/*"
}

# ---------------------------------------------------------------------------------------- keys --

module "storage_key" {
  source = "./modules/kms-key"

  prefix                  = var.prefix
  name                    = "storage"
  description             = "${var.prefix}: at-rest encryption of the Kinesis stream and the S3 buckets (used only through those services)"
  administrator_arns      = var.key_administrator_arns
  deletion_window_in_days = var.kms.deletion_window_in_days
  rotation_period_in_days = var.kms.rotation_period_in_days
  tags                    = local.tags

  users = [
    {
      sid                = "StreamWrite"
      principal_arns     = [module.producer_role.arn]
      actions            = ["kms:GenerateDataKey"]
      via_service        = "kinesis"
      encryption_context = { "aws:kinesis:arn" = [local.stream_arn] }
    },
    {
      sid                = "StreamRead"
      principal_arns     = [module.consumer_role.arn, module.stream.firehose_role_arn]
      actions            = ["kms:Decrypt"]
      via_service        = "kinesis"
      encryption_context = { "aws:kinesis:arn" = [local.stream_arn] }
    },
    {
      sid                = "ConsumerBuckets"
      principal_arns     = [module.consumer_role.arn]
      actions            = ["kms:Decrypt", "kms:GenerateDataKey"]
      via_service        = "s3"
      encryption_context = { "aws:s3:arn" = [local.bucket_arns.landing, local.bucket_arns.quarantine] }
    },
    {
      # DynamoDB encrypts the lease table under this key on the consumers' behalf (leases.tf).
      sid                = "LeaseTable"
      principal_arns     = [module.consumer_role.arn]
      actions            = ["kms:Decrypt", "kms:GenerateDataKey"]
      via_service        = "dynamodb"
      encryption_context = { "aws:dynamodb:tableName" = [local.lease_table_name] }
    },
    {
      sid                = "TrainerBuckets"
      principal_arns     = [module.trainer_role.arn]
      actions            = ["kms:Decrypt", "kms:GenerateDataKey"]
      via_service        = "s3"
      encryption_context = { "aws:s3:arn" = [local.bucket_arns.landing, local.bucket_arns.artifacts] }
    },
    {
      sid                = "ArchiveWrite"
      principal_arns     = [module.stream.firehose_role_arn]
      actions            = ["kms:Decrypt", "kms:GenerateDataKey"]
      via_service        = "s3"
      encryption_context = { "aws:s3:arn" = [local.bucket_arns.landing] }
    },
  ]

  service_users = [
    {
      sid         = "CloudTrailLogFiles"
      service     = "cloudtrail.amazonaws.com"
      actions     = ["kms:DescribeKey", "kms:GenerateDataKey"]
      source_arns = [local.trail_arn]
    },
    {
      sid         = "AlertsTopic"
      service     = "events.amazonaws.com"
      actions     = ["kms:Decrypt", "kms:GenerateDataKey"]
      source_arns = [local.key_rule]
    },
    {
      sid         = "AlarmsTopic"
      service     = "cloudwatch.amazonaws.com"
      actions     = ["kms:Decrypt", "kms:GenerateDataKey"]
      source_arns = ["arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:${var.prefix}-archive-delivery-late", "arn:${local.partition}:cloudwatch:${local.region}:${local.account_id}:alarm:${var.prefix}-consumer-lag"]
    },
  ]
}

module "data_key" {
  source = "./modules/kms-key"

  prefix                  = var.prefix
  name                    = "data"
  description             = "${var.prefix}: saip envelope encryption of records and model artifacts (encryption context required)"
  administrator_arns      = var.key_administrator_arns
  deletion_window_in_days = var.kms.deletion_window_in_days
  rotation_period_in_days = var.kms.rotation_period_in_days
  tags                    = local.tags

  users = [
    {
      # Mirrors encryption/policies/aws-producer.json: ingestion only wraps (seals) records.
      sid                = "IngestEnvelope"
      principal_arns     = [module.consumer_role.arn]
      actions            = ["kms:Encrypt", "kms:GenerateDataKey"]
      encryption_context = local.data_key_context
    },
    {
      sid                = "IngestRecover"
      principal_arns     = [module.consumer_role.arn]
      actions            = ["kms:Decrypt"]
      encryption_context = local.consumer_decrypt_context
    },
    {
      # aws-consumer.json (unwrap records) plus aws-producer.json (seal the trained model).
      sid                = "TrainerEnvelope"
      principal_arns     = [module.trainer_role.arn]
      actions            = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
      encryption_context = local.data_key_context
    },
  ]
}

# ------------------------------------------------------------------------------------- buckets --

resource "aws_s3_bucket" "access_logs" {
  # checkov:skip=CKV_AWS_145:S3 server access log delivery supports only SSE-S3 on the target bucket (AWS documentation, "Enabling Amazon S3 server access logging"); SSE-KMS here would silently drop the audit trail.
  # checkov:skip=CKV_AWS_18:This is the access-log bucket itself; logging it into itself would loop and logging it elsewhere needs yet another bucket.
  # checkov:skip=CKV_AWS_144:Cross-region replication of audit logs is a resilience/cost decision for the deployer; not a confidentiality control.
  # checkov:skip=CKV2_AWS_62:Event notifications are not used for access logs.
  bucket        = "${var.prefix}-access-logs"
  force_destroy = var.unsafe_force_destroy_buckets
  tags          = merge(local.tags, { Name = "${var.prefix}-access-logs" })
}

resource "aws_s3_bucket_public_access_block" "access_logs" {
  bucket                  = aws_s3_bucket.access_logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id

  rule {
    id     = "retention"
    status = "Enabled"

    filter {}

    expiration {
      days = var.buckets.access_log_expiration_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 30
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.access_logs]
}

resource "aws_s3_bucket_policy" "access_logs" {
  bucket = aws_s3_bucket.access_logs.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(var.unsafe_omit_bucket_policies ? [] : [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = ["s3:*"]
        Resource  = [aws_s3_bucket.access_logs.arn, "${aws_s3_bucket.access_logs.arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      ], [
      {
        Sid       = "VpcFlowLogsAclCheck"
        Effect    = "Allow"
        Principal = { Service = "delivery.logs.amazonaws.com" }
        Action    = ["s3:GetBucketAcl"]
        Resource  = [aws_s3_bucket.access_logs.arn]
        Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
      },
      {
        Sid       = "VpcFlowLogsWrite"
        Effect    = "Allow"
        Principal = { Service = "delivery.logs.amazonaws.com" }
        Action    = ["s3:PutObject"]
        Resource  = ["${aws_s3_bucket.access_logs.arn}/AWSLogs/${local.account_id}/*"]
        Condition = { StringEquals = { "aws:SourceAccount" = local.account_id, "s3:x-amz-acl" = "bucket-owner-full-control" } }
      },
      {
        Sid       = "CloudTrailAclCheck"
        Effect    = "Allow"
        Principal = { Service = "cloudtrail.amazonaws.com" }
        Action    = ["s3:GetBucketAcl"]
        Resource  = [aws_s3_bucket.access_logs.arn]
        Condition = { StringEquals = { "aws:SourceArn" = local.trail_arn } }
      },
      {
        Sid       = "CloudTrailWrite"
        Effect    = "Allow"
        Principal = { Service = "cloudtrail.amazonaws.com" }
        Action    = ["s3:PutObject"]
        Resource  = ["${aws_s3_bucket.access_logs.arn}/cloudtrail/AWSLogs/${local.account_id}/*"]
        Condition = { StringEquals = { "aws:SourceArn" = local.trail_arn, "s3:x-amz-acl" = "bucket-owner-full-control" } }
      },
      {
        Sid       = "S3ServerAccessLogs"
        Effect    = "Allow"
        Principal = { Service = "logging.s3.amazonaws.com" }
        Action    = ["s3:PutObject"]
        Resource  = "${aws_s3_bucket.access_logs.arn}/*" # a plain string, as in the AWS documentation
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
          ArnLike      = { "aws:SourceArn" = values(local.bucket_arns) }
        }
      },
    ])
  })

  depends_on = [aws_s3_bucket_public_access_block.access_logs]
}

# Every packet decision in the workloads' VPC, kept with the access logs (audit evidence).
resource "aws_flow_log" "vpc" {
  vpc_id               = var.network.vpc_id
  traffic_type         = "ALL"
  log_destination_type = "s3"
  log_destination      = aws_s3_bucket.access_logs.arn
  tags                 = merge(local.tags, { Name = "${var.prefix}-vpc-flow-logs" })

  depends_on = [aws_s3_bucket_policy.access_logs]
}

module "bucket" {
  source   = "./modules/s3-bucket"
  for_each = local.data_buckets

  prefix      = var.prefix
  name        = each.key
  kms_key_arn = module.storage_key.key_arn
  access_log_bucket = {
    # Through the policy resource, so logging is configured only once log delivery is allowed.
    bucket = aws_s3_bucket_policy.access_logs.bucket
  }
  lifecycle_rules = {
    noncurrent_version_expiration_days = var.buckets.noncurrent_version_expiration_days
  }
  unsafe_omit_bucket_policy = var.unsafe_omit_bucket_policies
  unsafe_force_destroy      = var.unsafe_force_destroy_buckets
  tags                      = local.tags
}

# ------------------------------------------------------------------------------------- stream --

module "stream" {
  source = "./modules/kinesis-firehose"

  prefix      = var.prefix
  kms_key_arn = module.storage_key.key_arn
  stream      = var.stream
  destination = {
    bucket_arn                 = module.bucket["landing"].arn
    kms_key_arn                = module.storage_key.key_arn
    object_prefix              = var.firehose.object_prefix
    error_prefix               = var.firehose.error_prefix
    buffering_size_mib         = var.firehose.buffering_size_mib
    buffering_interval_seconds = var.firehose.buffering_interval_seconds
  }
  tags = local.tags
}

# --------------------------------------------------------------------------------------- roles --

module "producer_role" {
  source = "./modules/iam-role"

  prefix                 = var.prefix
  name                   = "producer"
  description            = "Publishes signed records to the ${var.prefix} ingestion stream; nothing else."
  trusted_principal_arns = var.trusted_principal_arns.producer
  tags                   = local.tags
  statements = [{
    sid       = "PublishRecords"
    actions   = ["kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:PutRecord", "kinesis:PutRecords"]
    resources = [local.stream_arn]
  }]
}

module "consumer_role" {
  source = "./modules/iam-role"

  prefix                 = var.prefix
  name                   = "consumer"
  description            = "saip ingestion: reads the ${var.prefix} stream, writes accepted records to landing and rejects to quarantine."
  trusted_principal_arns = var.trusted_principal_arns.consumer
  tags                   = local.tags
  statements = [
    {
      sid       = "ReadStream"
      actions   = ["kinesis:DescribeStreamSummary", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"]
      resources = [local.stream_arn]
    },
    {
      sid       = "ListIngestBuckets"
      actions   = ["s3:ListBucket"]
      resources = [local.bucket_arns.landing, local.bucket_arns.quarantine]
    },
    {
      sid       = "WriteIngestObjects"
      actions   = ["s3:GetObject", "s3:PutObject"]
      resources = ["${local.bucket_arns.landing}/*", "${local.bucket_arns.quarantine}/*"]
    },
    {
      # Several consumers share the stream through KCL-style leases (saip_ingestion.backends.kinesis_leases):
      # exactly the calls that module makes, on this table only.
      sid       = "ShardLeases"
      actions   = ["dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"]
      resources = [local.lease_table_arn]
    },
    {
      sid       = "WatchArchive"
      actions   = ["firehose:DescribeDeliveryStream"]
      resources = ["arn:${local.partition}:firehose:${local.region}:${local.account_id}:deliverystream/${var.prefix}-archive"]
    },
  ]
}

module "trainer_role" {
  source = "./modules/iam-role"

  prefix                 = var.prefix
  name                   = "trainer"
  description            = "Training: reads accepted records from landing and writes sealed model artifacts."
  trusted_principal_arns = var.trusted_principal_arns.trainer
  tags                   = local.tags
  statements = [
    {
      sid       = "ListTrainingBuckets"
      actions   = ["s3:ListBucket"]
      resources = [local.bucket_arns.landing, local.bucket_arns.artifacts]
    },
    {
      sid       = "ReadLanding"
      actions   = ["s3:GetObject"]
      resources = [local.trainer_landing_objects]
    },
    {
      sid       = "WriteArtifacts"
      actions   = ["s3:GetObject", "s3:PutObject"]
      resources = ["${local.bucket_arns.artifacts}/*"]
    },
  ]
}

# ----------------------------------------------------------------------------------- endpoints --

module "endpoints" {
  source = "./modules/vpc-endpoints"

  prefix              = var.prefix
  vpc_id              = var.network.vpc_id
  subnet_ids          = var.network.subnet_ids
  route_table_ids     = var.network.route_table_ids
  allowed_cidr_blocks = var.network.allowed_cidr_blocks
  create_endpoints    = !var.network.shared_vpc
  tags                = local.tags

  policies = {
    kinesis = [
      {
        sid            = "Producers"
        principal_arns = [module.producer_role.arn]
        actions        = ["kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:PutRecord", "kinesis:PutRecords"]
        resources      = [module.stream.stream_arn]
      },
      {
        sid            = "Consumers"
        principal_arns = [module.consumer_role.arn]
        actions        = ["kinesis:DescribeStreamSummary", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"]
        resources      = [module.stream.stream_arn]
      },
    ]
    kms = [
      {
        sid            = "IngestEnvelope"
        principal_arns = [module.consumer_role.arn]
        actions        = ["kms:Encrypt", "kms:GenerateDataKey"]
        resources      = [module.data_key.key_arn]
      },
      {
        sid            = "IngestRecover"
        principal_arns = [module.consumer_role.arn]
        actions        = ["kms:Decrypt"]
        resources      = [module.data_key.key_arn]
      },
      {
        sid            = "TrainerEnvelope"
        principal_arns = [module.trainer_role.arn]
        actions        = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
        resources      = [module.data_key.key_arn]
      },
    ]
    dynamodb = [{
      sid            = "ShardLeases"
      principal_arns = [module.consumer_role.arn]
      actions        = ["dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"]
      resources      = [local.lease_table_arn]
    }]
    firehose = [{
      sid            = "WatchArchive"
      principal_arns = [module.consumer_role.arn]
      actions        = ["firehose:DescribeDeliveryStream"]
      resources      = [module.stream.firehose_arn]
    }]
    s3 = [
      {
        sid            = "IngestBuckets"
        principal_arns = [module.consumer_role.arn]
        actions        = ["s3:GetObject", "s3:ListBucket", "s3:PutObject"]
        resources      = [module.bucket["landing"].arn, "${module.bucket["landing"].arn}/*", module.bucket["quarantine"].arn, "${module.bucket["quarantine"].arn}/*"]
      },
      {
        sid            = "TrainingBuckets"
        principal_arns = [module.trainer_role.arn]
        actions        = ["s3:GetObject", "s3:ListBucket", "s3:PutObject"]
        resources      = [module.bucket["landing"].arn, "${module.bucket["landing"].arn}/accepted/*", module.bucket["artifacts"].arn, "${module.bucket["artifacts"].arn}/*"]
      },
    ]
  }
}
