# Example root: a VPC without external routes plus the secure-ingestion module, with the Avro
# schema read from the ingestion package (the single schema source; tests/infra checks the path).

terraform {
  required_version = ">= 1.7.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.10.0, < 7.0.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

variable "avro_schema_path" {
  description = "Path of the record schema exported by the ingestion package, relative to this example."
  type        = string
  default     = "../../../../ingestion/schemas/record.v1.avsc"
  nullable    = false
}

variable "prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "saip-demo"
  nullable    = false
}

variable "project_id" {
  description = "Project to deploy into."
  type        = string
  nullable    = false
}

variable "region" {
  description = "Region."
  type        = string
  default     = "europe-west1"
  nullable    = false
}

resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = "${var.prefix}-vpc"
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "workloads" {
  # checkov:skip=CKV_GCP_76:Private Google Access over IPv6 is not used: the workloads reach Google APIs over IPv4 through the Private Service Connect endpoint.
  project                  = var.project_id
  name                     = "${var.prefix}-workloads"
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = "10.70.0.0/24"
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_SEC"
    flow_sampling        = 1
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Default deny both ways, logged; the only egress is HTTPS to the Private Service Connect endpoint.
resource "google_compute_firewall" "deny_ingress" {
  project   = var.project_id
  name      = "${var.prefix}-deny-all-ingress"
  network   = google_compute_network.this.id
  direction = "INGRESS"
  priority  = 65534

  deny {
    protocol = "all"
  }

  source_ranges = ["0.0.0.0/0"]

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "allow_google_apis" {
  project            = var.project_id
  name               = "${var.prefix}-allow-psc-https"
  network            = google_compute_network.this.id
  direction          = "EGRESS"
  priority           = 1000
  destination_ranges = ["10.70.255.10/32"]

  allow {
    protocol = "tcp"
    ports    = ["443"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_firewall" "deny_egress" {
  project            = var.project_id
  name               = "${var.prefix}-deny-all-egress"
  network            = google_compute_network.this.id
  direction          = "EGRESS"
  priority           = 65534
  destination_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

module "secure_ingestion" {
  source = "../.."

  prefix                 = var.prefix
  project_id             = var.project_id
  region                 = var.region
  avro_schema_definition = file("${path.module}/${var.avro_schema_path}")
  network = {
    self_link   = google_compute_network.this.self_link
    psc_address = "10.70.255.10"
  }
}

# The training environment on the same VPC: Vertex AI custom jobs with CMEK, private service
# access and the trainer service account of the ingestion module.
module "vertex_training" {
  source = "../../modules/vertex-training"

  prefix     = var.prefix
  project_id = var.project_id
  region     = var.region
  ingestion  = module.secure_ingestion.training_inputs
  network = {
    self_link             = google_compute_network.this.self_link
    peering_range_address = "10.80.0.0"
  }
}

output "custom_job_spec" {
  description = "Fields of every Vertex AI custom job (CMEK, network, service account, output directory)."
  value       = module.vertex_training.custom_job_spec
}

output "saip_config" {
  description = "The [ingest] and [encryption] sections of saip's --config TOML."
  value       = module.secure_ingestion.saip_config
}
