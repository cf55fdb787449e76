# Private connectivity for every data-plane service the pipeline calls: interface endpoints (private
# DNS on, so the SDKs' default endpoints resolve to private IPs) for Kinesis, KMS and Firehose, and
# gateway endpoints for S3 and (when `policies` has a dynamodb entry: the Kinesis lease table of
# several consumers) DynamoDB. Each endpoint carries a policy naming the principals, actions and ARNs it
# may serve: a data perimeter, so stolen credentials cannot move data to another account's resources
# through this VPC.
#
# In a VPC shared with other workloads, these endpoints would break them: a restrictive S3 gateway
# endpoint policy on shared route tables denies every other bucket, and interface endpoints with
# private DNS take over the service names for the whole VPC (and collide with endpoints that
# already exist). There, set create_endpoints = false: nothing is created and the `policies`
# output is for the VPC owner to merge into the existing endpoints' policies (opt-in).

data "aws_region" "current" {}

locals {
  interface_services = {
    firehose = "kinesis-firehose"
    kinesis  = "kinesis-streams"
    kms      = "kms"
  }

  policy_documents = { for svc, stmts in var.policies : svc => jsonencode({
    Version = "2012-10-17"
    Statement = [for s in stmts : {
      Sid       = s.sid
      Effect    = "Allow"
      Principal = { AWS = s.principal_arns }
      Action    = s.actions
      Resource  = s.resources
    }]
  }) }
}

resource "aws_security_group" "endpoints" {
  count = var.create_endpoints ? 1 : 0

  name        = "${var.prefix}-vpc-endpoints"
  description = "HTTPS from the workload subnets to the ${var.prefix} interface endpoints"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.prefix}-vpc-endpoints" })
}

resource "aws_vpc_security_group_ingress_rule" "https" {
  for_each = var.create_endpoints ? toset(var.allowed_cidr_blocks) : toset([])

  security_group_id = aws_security_group.endpoints[0].id
  description       = "HTTPS from ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  tags              = var.tags
}

resource "aws_vpc_endpoint" "interface" {
  for_each = var.create_endpoints ? local.interface_services : {}

  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${data.aws_region.current.name}.${each.value}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = var.subnet_ids
  security_group_ids  = [aws_security_group.endpoints[0].id]
  policy              = local.policy_documents[each.key]
  tags                = merge(var.tags, { Name = "${var.prefix}-${each.key}" })
}

resource "aws_vpc_endpoint" "s3" {
  count = var.create_endpoints ? 1 : 0

  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.route_table_ids
  policy            = local.policy_documents["s3"]
  tags              = merge(var.tags, { Name = "${var.prefix}-s3" })
}

resource "aws_vpc_endpoint" "dynamodb" {
  count = var.create_endpoints && contains(keys(var.policies), "dynamodb") ? 1 : 0

  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${data.aws_region.current.name}.dynamodb"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.route_table_ids
  policy            = local.policy_documents["dynamodb"]
  tags              = merge(var.tags, { Name = "${var.prefix}-dynamodb" })
}
