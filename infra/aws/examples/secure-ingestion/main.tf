# Example root: a private VPC (no internet gateway, no NAT) with two subnets, and the secure-ingestion
# module wired into it. The identity running Terraform administers the keys; the account root may
# assume the workload roles (tighten trusted_principal_arns to your workload identities).

data "aws_caller_identity" "current" {}

data "aws_iam_session_context" "current" {
  arn = data.aws_caller_identity.current.arn
}

data "aws_partition" "current" {}

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
  azs          = [for suffix in var.availability_zone_suffixes : "${var.region}${suffix}"]
  subnets      = { for i, az in local.azs : az => cidrsubnet(var.vpc_cidr, 8, i + 1) }
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true # required by the interface endpoints' private DNS
  tags                 = { Name = "${var.prefix}-vpc" }
}

# Lock down the default security group: no rules at all.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.prefix}-default-deny" }
}

resource "aws_subnet" "private" {
  for_each = local.subnets

  vpc_id                  = aws_vpc.this.id
  availability_zone       = each.key
  cidr_block              = each.value
  map_public_ip_on_launch = false
  tags                    = { Name = "${var.prefix}-private-${each.key}" }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = { Name = "${var.prefix}-private" }
}

resource "aws_route_table_association" "private" {
  for_each = aws_subnet.private

  subnet_id      = each.value.id
  route_table_id = aws_route_table.private.id
}

module "secure_ingestion" {
  source = "../.."

  prefix                 = var.prefix
  encryption_context     = var.encryption_context
  key_administrator_arns = length(var.key_administrator_arns) > 0 ? var.key_administrator_arns : [data.aws_iam_session_context.current.issuer_arn]
  trusted_principal_arns = {
    producer = [local.account_root]
    consumer = [local.account_root]
    trainer  = [local.account_root]
  }
  network = {
    vpc_id              = aws_vpc.this.id
    subnet_ids          = [for s in aws_subnet.private : s.id]
    route_table_ids     = [aws_route_table.private.id]
    allowed_cidr_blocks = [for s in aws_subnet.private : s.cidr_block]
  }

  # Escape hatches, off unless set explicitly (make tf-apply-local sets both against moto).
  unsafe_force_destroy_buckets = var.unsafe_force_destroy_buckets
  unsafe_omit_bucket_policies  = var.unsafe_omit_bucket_policies
}
