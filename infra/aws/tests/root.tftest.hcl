# Unit tests of the root module (secure ingestion) with a mocked AWS provider: the composed
# stack keeps its secure defaults, saip_config has the shape saip reads, every validation rejects.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  prefix                 = "saip-test"
  encryption_context     = { "saip:pipeline" = "ingest" }
  key_administrator_arns = ["arn:aws:iam::123456789012:role/key-admin"]
  network = {
    vpc_id              = "vpc-0123456789abcdef0"
    subnet_ids          = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    route_table_ids     = ["rtb-0123456789abcdef0"]
    allowed_cidr_blocks = ["10.0.1.0/24", "10.0.2.0/24"]
  }
  trusted_principal_arns = {
    producer = ["arn:aws:iam::123456789012:root"]
    consumer = ["arn:aws:iam::123456789012:root"]
    trainer  = ["arn:aws:iam::123456789012:root"]
  }
}

run "composed_stack" {
  command = apply

  assert {
    condition     = output.saip_config.ingest.backend == "aws" && output.saip_config.ingest.region == "eu-west-1" && output.saip_config.ingest.stream == "saip-test-records" && output.saip_config.ingest.bucket == "saip-test-landing"
    error_message = "saip_config.ingest must carry backend, region, stream and bucket"
  }
  assert {
    condition     = output.saip_config.encryption.key == "aws-kms:arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
    error_message = "saip_config.encryption.key must be an aws-kms: key URI of the data key"
  }
  assert {
    condition     = output.saip_config.encryption.context["saip:pipeline"] == "ingest" && length(output.saip_config.encryption.context) == 1
    error_message = "saip_config.encryption.context must be the context the key policy requires"
  }
  assert {
    condition     = alltrue([for p in [module.producer_role.policy, module.consumer_role.policy, module.trainer_role.policy] : alltrue([for s in jsondecode(p).Statement : alltrue([for a in s.Action : !strcontains(a, "*")]) && alltrue([for r in s.Resource : r != "*"])])])
    error_message = "workload roles: no wildcard actions, no '*' resources"
  }
  assert {
    condition     = alltrue([for b in ["landing", "quarantine", "artifacts"] : length([for s in jsondecode(module.bucket[b].policy).Statement : s if s.Sid == "DenyInsecureTransport"]) == 1])
    error_message = "every data bucket must be TLS-only"
  }
  assert {
    condition     = one([for s in jsondecode(aws_s3_bucket_policy.access_logs.policy).Statement : s if s.Sid == "DenyInsecureTransport"]).Condition.Bool["aws:SecureTransport"] == "false"
    error_message = "the access-log bucket must be TLS-only"
  }
  assert {
    condition     = one([for s in jsondecode(module.data_key.policy).Statement : s if s.Sid == "IngestEnvelope"]).Condition.StringEquals["kms:EncryptionContext:saip:pipeline"] == ["ingest"]
    error_message = "the data key must require the encryption context"
  }
  assert {
    condition     = one([for s in jsondecode(module.storage_key.policy).Statement : s if s.Sid == "StreamWrite"]).Condition.StringEquals["kms:ViaService"] == "kinesis.eu-west-1.amazonaws.com"
    error_message = "the storage key is usable by producers only through Kinesis"
  }
  assert {
    condition     = keys(module.endpoints.endpoint_ids) == ["dynamodb", "firehose", "kinesis", "kms", "s3"]
    error_message = "a VPC endpoint per data-plane service (the lease table's DynamoDB included)"
  }
  assert {
    condition     = aws_dynamodb_table.leases.server_side_encryption[0].enabled && aws_dynamodb_table.leases.server_side_encryption[0].kms_key_arn == module.storage_key.key_arn && aws_dynamodb_table.leases.point_in_time_recovery[0].enabled && aws_dynamodb_table.leases.deletion_protection_enabled && aws_dynamodb_table.leases.hash_key == "lease_key"
    error_message = "the lease table must be CMK-encrypted, with point-in-time recovery and deletion protection, keyed by lease_key"
  }
  assert {
    condition     = one([for s in jsondecode(module.consumer_role.policy).Statement : s if s.Sid == "ShardLeases"]).Action == ["dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"] && one([for s in jsondecode(module.consumer_role.policy).Statement : s if s.Sid == "ShardLeases"]).Resource == ["arn:aws:dynamodb:eu-west-1:123456789012:table/saip-test-kinesis-leases"]
    error_message = "the consumer may use exactly the four lease calls, on the lease table only"
  }
  assert {
    condition     = one([for s in jsondecode(module.storage_key.policy).Statement : s if s.Sid == "LeaseTable"]).Condition.StringEquals["kms:ViaService"] == "dynamodb.eu-west-1.amazonaws.com"
    error_message = "the storage key is usable for the lease table only through DynamoDB"
  }
  assert {
    condition     = aws_flow_log.vpc.traffic_type == "ALL" && aws_flow_log.vpc.log_destination_type == "s3"
    error_message = "VPC flow logs of all traffic are required"
  }
}

# Semantic checks of defect fixes: the rendered policies are evaluated for concrete requests (the
# condition operators used here: StringEquals, StringNotEquals, Null; see the README), not only
# searched for attribute names.
run "policies_decide_requests" {
  command = apply

  assert {
    condition     = alltrue([for b in ["landing", "quarantine", "artifacts"] : anytrue([for s in jsondecode(module.bucket[b].policy).Statement : s.Effect == "Deny" && contains(s.Action, "s3:PutObject") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : (op == "Null" ? (tostring(v) == "true") == !contains(keys({ "s3:x-amz-server-side-encryption" = "aws:kms" }), k) : op == "StringEquals" ? contains(keys({ "s3:x-amz-server-side-encryption" = "aws:kms" }), k) && contains(flatten([v]), lookup({ "s3:x-amz-server-side-encryption" = "aws:kms" }, k, "")) : op == "StringNotEquals" ? contains(keys({ "s3:x-amz-server-side-encryption" = "aws:kms" }), k) && !contains(flatten([v]), lookup({ "s3:x-amz-server-side-encryption" = "aws:kms" }, k, "")) : false)])])])])
    error_message = "PutObject with SSE aws:kms but no key ID (S3 would use aws/s3) must be denied on every data bucket"
  }
  assert {
    condition     = !anytrue([for s in jsondecode(module.bucket["landing"].policy).Statement : s.Effect == "Deny" && contains(s.Action, "s3:PutObject") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : (op == "Null" ? (tostring(v) == "true") == !contains(keys({ "s3:x-amz-server-side-encryption" = "aws:kms", "s3:x-amz-server-side-encryption-aws-kms-key-id" = module.storage_key.key_arn }), k) : op == "StringEquals" ? contains(keys({ "s3:x-amz-server-side-encryption" = "aws:kms", "s3:x-amz-server-side-encryption-aws-kms-key-id" = module.storage_key.key_arn }), k) && contains(flatten([v]), lookup({ "s3:x-amz-server-side-encryption" = "aws:kms", "s3:x-amz-server-side-encryption-aws-kms-key-id" = module.storage_key.key_arn }, k, "")) : op == "StringNotEquals" ? contains(keys({ "s3:x-amz-server-side-encryption" = "aws:kms", "s3:x-amz-server-side-encryption-aws-kms-key-id" = module.storage_key.key_arn }), k) && !contains(flatten([v]), lookup({ "s3:x-amz-server-side-encryption" = "aws:kms", "s3:x-amz-server-side-encryption-aws-kms-key-id" = module.storage_key.key_arn }, k, "")) : false)])])]) && !anytrue([for s in jsondecode(module.bucket["landing"].policy).Statement : s.Effect == "Deny" && contains(s.Action, "s3:PutObject") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : (op == "Null" ? (tostring(v) == "true") == !contains(keys({ "s3:x-amz-acl" = "private" }), k) : op == "StringEquals" ? contains(keys({ "s3:x-amz-acl" = "private" }), k) && contains(flatten([v]), lookup({ "s3:x-amz-acl" = "private" }, k, "")) : op == "StringNotEquals" ? contains(keys({ "s3:x-amz-acl" = "private" }), k) && !contains(flatten([v]), lookup({ "s3:x-amz-acl" = "private" }, k, "")) : false)])])])
    error_message = "PutObject naming the bucket's CMK, or sending no SSE header (bucket default), must not be denied"
  }
  assert {
    condition     = output.saip_config.ingest.aws.kms_key_id == module.storage_key.key_arn
    error_message = "saip_config must carry the bucket key, so saip never sends aws:kms without a key ID"
  }
  assert {
    condition     = anytrue([for s in jsondecode(module.trainer_role.policy).Statement : contains(s.Action, "s3:GetObject") && anytrue([for r in s.Resource : endswith(r, "*") ? startswith("arn:aws:s3:::saip-test-landing/accepted/c1/000000000001", trimsuffix(r, "*")) : r == "arn:aws:s3:::saip-test-landing/accepted/c1/000000000001"])])
    error_message = "the trainer must read accepted batches"
  }
  assert {
    condition     = !anytrue([for s in jsondecode(module.trainer_role.policy).Statement : contains(s.Action, "s3:GetObject") && anytrue([for r in s.Resource : endswith(r, "*") ? startswith("arn:aws:s3:::saip-test-landing/raw/2026/01/01/x", trimsuffix(r, "*")) : r == "arn:aws:s3:::saip-test-landing/raw/2026/01/01/x"])]) && !anytrue([for s in jsondecode(module.trainer_role.policy).Statement : contains(s.Action, "s3:GetObject") && anytrue([for r in s.Resource : endswith(r, "*") ? startswith("arn:aws:s3:::saip-test-landing/quarantine/schema/abc", trimsuffix(r, "*")) : r == "arn:aws:s3:::saip-test-landing/quarantine/schema/abc"])])
    error_message = "the trainer must not read the raw Firehose archive or quarantine entries"
  }
}

run "data_key_decides_decrypt" {
  command = apply

  # The mocked provider gives every role the same ARN: give the workload roles distinct ones.
  override_module {
    target  = module.consumer_role
    outputs = { arn = "arn:aws:iam::123456789012:role/saip-test-consumer", name = "saip-test-consumer", policy = "{}" }
  }
  override_module {
    target  = module.trainer_role
    outputs = { arn = "arn:aws:iam::123456789012:role/saip-test-trainer", name = "saip-test-trainer", policy = "{}" }
  }
  override_module {
    target  = module.producer_role
    outputs = { arn = "arn:aws:iam::123456789012:role/saip-test-producer", name = "saip-test-producer", policy = "{}" }
  }

  assert {
    condition     = anytrue([for s in jsondecode(module.data_key.policy).Statement : s.Effect == "Allow" && contains(flatten([s.Principal.AWS]), module.consumer_role.arn) && contains(s.Action, "kms:Decrypt") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : (op == "Null" ? (tostring(v) == "true") == !contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }), k) : op == "StringEquals" ? contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }), k) && contains(flatten([v]), lookup({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }, k, "")) : op == "StringNotEquals" ? contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }), k) && !contains(flatten([v]), lookup({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }, k, "")) : false)])])]) && anytrue([for s in jsondecode(module.data_key.policy).Statement : s.Effect == "Allow" && contains(flatten([s.Principal.AWS]), module.consumer_role.arn) && contains(s.Action, "kms:Decrypt") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : (op == "Null" ? (tostring(v) == "true") == !contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-quarantine" }), k) : op == "StringEquals" ? contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-quarantine" }), k) && contains(flatten([v]), lookup({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-quarantine" }, k, "")) : op == "StringNotEquals" ? contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-quarantine" }), k) && !contains(flatten([v]), lookup({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "ingest-quarantine" }, k, "")) : false)])])])
    error_message = "the consumer must be able to unwrap its own batches (crash recovery) and quarantine entries"
  }
  assert {
    condition     = !anytrue([for s in jsondecode(module.data_key.policy).Statement : s.Effect == "Allow" && contains(flatten([s.Principal.AWS]), module.consumer_role.arn) && contains(s.Action, "kms:Decrypt") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : (op == "Null" ? (tostring(v) == "true") == !contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "model-artifact" }), k) : op == "StringEquals" ? contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "model-artifact" }), k) && contains(flatten([v]), lookup({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "model-artifact" }, k, "")) : op == "StringNotEquals" ? contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "model-artifact" }), k) && !contains(flatten([v]), lookup({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:pipeline" = "ingest", "kms:EncryptionContext:saip:purpose" = "model-artifact" }, k, "")) : false)])])]) && !anytrue([for s in jsondecode(module.data_key.policy).Statement : s.Effect == "Allow" && contains(flatten([s.Principal.AWS]), module.consumer_role.arn) && contains(s.Action, "kms:Decrypt") && alltrue([for op, kv in lookup(s, "Condition", {}) : alltrue([for k, v in kv : (op == "Null" ? (tostring(v) == "true") == !contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }), k) : op == "StringEquals" ? contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }), k) && contains(flatten([v]), lookup({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }, k, "")) : op == "StringNotEquals" ? contains(keys({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }), k) && !contains(flatten([v]), lookup({ "kms:CallerAccount" = "123456789012", "kms:EncryptionContext:saip:purpose" = "ingest-accepted" }, k, "")) : false)])])])
    error_message = "the consumer's Decrypt must be scoped by encryption context (purpose and the configured context)"
  }
}

run "audit_records_and_alerts" {
  command = apply

  assert {
    condition     = anytrue([for sel in aws_cloudtrail.data.advanced_event_selector : anytrue([for f in sel.field_selector : f.field == "eventCategory" && try(contains(f.equals, "Management"), false)]) && !anytrue([for f in sel.field_selector : f.field == "eventSource"])])
    error_message = "management events (every KMS call, none excluded) must be recorded"
  }
  assert {
    condition = alltrue([for obj in ["arn:aws:s3:::saip-test-landing/accepted/c/1", "arn:aws:s3:::saip-test-quarantine/x", "arn:aws:s3:::saip-test-artifacts/model", "arn:aws:s3:::saip-test-landing/raw/2026/x"] :
      anytrue([for sel in aws_cloudtrail.data.advanced_event_selector :
        anytrue([for f in sel.field_selector : f.field == "resources.type" && try(contains(f.equals, "AWS::S3::Object"), false)]) &&
    anytrue([for f in sel.field_selector : f.field == "resources.ARN" && anytrue([for p in coalesce(f.starts_with, ["\u0000"]) : startswith(obj, p)])])])])
    error_message = "object-level reads and writes of every data bucket must be recorded"
  }
  assert {
    condition     = anytrue([for sel in aws_cloudtrail.data.advanced_event_selector : anytrue([for f in sel.field_selector : f.field == "resources.ARN" && try(contains(f.equals, "arn:aws:kinesis:eu-west-1:123456789012:stream/saip-test-records"), false)])])
    error_message = "record-level events of the stream must be recorded"
  }
  assert {
    condition     = aws_cloudtrail.data.enable_log_file_validation && aws_cloudtrail.data.kms_key_id == module.storage_key.key_arn && aws_cloudtrail.data.is_multi_region_trail
    error_message = "the trail must be validated, encrypted with the CMK and multi-region"
  }
  assert {
    condition     = toset(jsondecode(aws_cloudwatch_event_rule.kms_key_danger.event_pattern).detail.eventName) == toset(["DisableKey", "PutKeyPolicy", "ScheduleKeyDeletion"]) && aws_cloudwatch_event_target.kms_key_danger.arn == aws_sns_topic.alerts.arn
    error_message = "a key pending deletion, disabled or re-policied must alert"
  }
  assert {
    condition     = alltrue([for a in [aws_cloudwatch_metric_alarm.firehose_freshness, aws_cloudwatch_metric_alarm.consumer_lag] : a.alarm_actions == toset([aws_sns_topic.alerts.arn])])
    error_message = "delivery and consumer-lag alarms must notify the alerts topic"
  }
}

run "rejects_bad_input" {
  command = plan
  variables {
    prefix                 = "Saip"
    encryption_context     = { "aws:reserved" = "x" }
    key_administrator_arns = ["arn:aws:iam::123456789012:root"]
    kms                    = { deletion_window_in_days = 1 }
    stream                 = { retention_period_hours = 1 }
    buckets                = { access_log_expiration_days = 30 }
    firehose               = { object_prefix = "raw" }
    trusted_principal_arns = { producer = ["*"], consumer = [], trainer = ["arn:aws:iam::123456789012:root"] }
    network = {
      vpc_id              = "vpc-0123456789abcdef0"
      subnet_ids          = ["subnet-0123456789abcdef0"]
      route_table_ids     = ["rtb-0123456789abcdef0"]
      allowed_cidr_blocks = ["0.0.0.0/0"]
    }
  }
  expect_failures = [var.prefix, var.encryption_context, var.key_administrator_arns, var.kms, var.stream, var.buckets, var.firehose, var.trusted_principal_arns, var.network]
}

run "rejects_second_blocks" {
  command = plan
  variables {
    kms     = { rotation_period_in_days = 30 }
    buckets = { noncurrent_version_expiration_days = 0 }
    network = {
      vpc_id              = "not-a-vpc"
      subnet_ids          = ["subnet-0123456789abcdef0"]
      route_table_ids     = ["rtb-0123456789abcdef0"]
      allowed_cidr_blocks = ["10.0.1.0/24"]
    }
  }
  expect_failures = [var.kms, var.buckets, var.network]
}

run "rejects_empty_network_lists" {
  command = plan
  variables {
    network = {
      vpc_id              = "vpc-0123456789abcdef0"
      subnet_ids          = []
      route_table_ids     = []
      allowed_cidr_blocks = ["10.0.1.0/24"]
    }
  }
  expect_failures = [var.network]
}
