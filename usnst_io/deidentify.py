"""De-identification of derived DICOM: the Basic Application Level Confidentiality Profile of DICOM PS3.15 (Annex E,
Table E.1-1), applied to the header of every image usnst derives, unless a user keeps identity explicitly.

A stylized frame is a teaching image that people share; it must not carry the patient's name, IDs, dates, the
physicians, the institution or the device's serial number just because the source did. The profile's actions are
D (a dummy value), Z (empty), X (removed) and U (a new UID, the same for the same source UID); where the table gives
a choice (X/Z, Z/D…) the stricter one that keeps the file valid is used. Private attributes are removed, and the
result says what was done (Patient Identity Removed YES, De-identification Method and its code, CID 7050).

UIDs are replaced by a hash of the source UID with a fixed root, so a series stylized in shards, or resumed, keeps one
Study, Series and Frame of Reference UID, and frames derived from one source series stay one series. Text burned
into the pixels is not touched here: the header then says Burned In Annotation YES (usnst_io.dicom).
"""
from __future__ import annotations

import uuid

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

# Table E.1-1, by action (keywords as pydicom spells them).
DUMMY = (
    "GraphicAnnotationSequence", "PersonIdentificationCodeSequence", "PersonName", "VerifyingObserverName",
    "VerifyingObserverSequence",
)
EMPTY = (
    "AccessionNumber", "ContentCreatorName", "ContentDate", "ContentTime", "ContrastBolusAgent",
    "FillerOrderNumberImagingServiceRequest", "PatientBirthDate", "PatientID", "PatientName", "PatientSex",
    "PlacerOrderNumberImagingServiceRequest", "ReferringPhysicianName", "StudyDate", "StudyID", "StudyTime",
    "VerifyingObserverIdentificationCodeSequence", "AcquisitionDate", "AcquisitionTime",
)
REMOVE = (
    "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDateTime", "ActualHumanPerformersSequence",
    "AdditionalPatientHistory", "AdmissionID", "AdmittingDate", "AdmittingDiagnosesCodeSequence",
    "AdmittingDiagnosesDescription", "AdmittingTime", "Allergies", "Arbitrary", "AuthorObserverSequence",
    "BranchOfService", "CassetteID", "CommentsOnThePerformedProcedureStep",
    "ConfidentialityConstraintOnPatientDataDescription", "ContentCreatorIdentificationCodeSequence",
    "ContentSequence", "ContributionDescription", "CountryOfResidence", "CurrentPatientLocation",
    "CustodialOrganizationSequence", "DataSetTrailingPadding", "DetectorID", "DeviceSerialNumber",
    "DigitalSignaturesSequence", "DischargeDiagnosisDescription", "DistributionAddress", "DistributionName",
    "EthnicGroup", "FrameComments", "GantryID", "GeneratorID", "HumanPerformerName", "HumanPerformerOrganization",
    "IconImageSequence", "IdentifyingComments", "ImageComments", "ImagePresentationComments",
    "ImagingServiceRequestComments", "Impressions", "InstitutionAddress", "InstitutionCodeSequence",
    "InstitutionName", "InstitutionalDepartmentName", "InsurancePlanIdentification",
    "IntendedRecipientsOfResultsIdentificationSequence", "InterpretationApproverSequence", "InterpretationAuthor",
    "InterpretationDiagnosisDescription", "InterpretationIDIssuer", "InterpretationRecorder", "InterpretationText",
    "InterpretationTranscriber", "IssuerOfAdmissionID", "IssuerOfPatientID", "IssuerOfServiceEpisodeID", "MAC",
    "MedicalAlerts", "MedicalRecordLocator", "MilitaryRank", "ModifiedAttributesSequence",
    "ModifiedImageDescription", "ModifyingDeviceID", "NameOfPhysiciansReadingStudy",
    "NamesOfIntendedRecipientsOfResults", "Occupation", "OperatorIdentificationSequence", "OperatorsName",
    "OriginalAttributesSequence", "OrderCallbackPhoneNumber", "OrderEnteredBy", "OrderEntererLocation",
    "OtherPatientIDsSequence", "OtherPatientNames", "ParticipantSequence", "PatientAddress", "PatientAge",
    "PatientBirthName", "PatientBirthTime", "PatientComments", "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName", "PatientPrimaryLanguageCodeSequence", "PatientReligiousPreference",
    "PatientSexNeutered", "PatientSize", "PatientState", "PatientTelephoneNumbers", "PatientTransportArrangements",
    "PatientWeight", "PerformedLocation", "PerformedProcedureStepDescription", "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "PerformedStationAETitle",
    "PerformedStationGeographicLocationCodeSequence", "PerformedStationName", "PerformedStationNameCodeSequence",
    "PerformingPhysicianIdentificationSequence", "PerformingPhysicianName", "PersonAddress",
    "PersonTelephoneNumbers", "PhysicianApprovingInterpretation", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence", "PlateID",
    "PreMedication", "PregnancyStatus", "ProtocolName", "ReasonForTheImagingServiceRequest", "ReasonForStudy",
    "ReferencedDigitalSignatureSequence", "ReferencedImageSequence", "ReferencedPatientAliasSequence",
    "ReferencedPatientSequence", "ReferencedPerformedProcedureStepSequence", "ReferencedSOPInstanceMACSequence",
    "ReferencedStudySequence", "ReferringPhysicianAddress", "ReferringPhysicianIdentificationSequence",
    "ReferringPhysicianTelephoneNumbers", "RegionOfResidence", "RequestAttributesSequence",
    "RequestedContrastAgent", "RequestedProcedureComments", "RequestedProcedureDescription",
    "RequestedProcedureID", "RequestedProcedureLocation", "RequestingPhysician", "RequestingService",
    "ResultsComments", "ResultsDistributionListSequence", "ResultsIDIssuer",
    "ReviewerName", "ScheduledHumanPerformersSequence", "ScheduledPatientInstitutionResidence",
    "ScheduledPerformingPhysicianIdentificationSequence", "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepEndDate", "ScheduledProcedureStepEndTime", "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "ScheduledStationAETitle",
    "ScheduledStationGeographicLocationCodeSequence", "ScheduledStationName", "ScheduledStudyLocation",
    "ScheduledStudyLocationAETitle", "SeriesDate", "SeriesDescription", "SeriesTime",
    "ServiceEpisodeDescription", "ServiceEpisodeID", "SmokingStatus", "SourceImageSequence", "SpecialNeeds",
    "StationName", "StudyComments", "StudyDescription", "StudyIDIssuer", "TextComments", "TextString",
    "TimezoneOffsetFromUTC", "TopicAuthor", "TopicKeywords", "TopicSubject", "TopicTitle", "VerifyingOrganization",
    "VisitComments", "OtherPatientIDs", "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
    "InstanceCreationDate", "InstanceCreationTime", "InstanceCreatorUID", "DerivationDescription",
)
NEW_UID = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "ConcatenationUID",
    "DimensionOrganizationUID", "DoseReferenceUID", "FiducialUID", "IrradiationEventUID",
    "LargePaletteColorLookupTableUID", "ReferencedFrameOfReferenceUID", "ReferencedSOPInstanceUID",
    "RelatedFrameOfReferenceUID", "SynchronizationFrameOfReferenceUID", "StorageMediaFileSetUID",
    "TransactionUID", "DeviceUID", "MediaStorageSOPInstanceUID", "ContextGroupExtensionCreatorUID",
    "CreatorVersionUID", "TemplateExtensionCreatorUID", "TemplateExtensionOrganizationUID", "UID",
)
_DUMMIES = {"PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000", "CS": "ANONYMIZED"}
METHOD = "DICOM PS3.15 E.1 basic profile (usnst)"  # LO: at most 64 characters


_NAMESPACE = uuid.UUID("5f1d2c1e-3b7a-5c1e-9d2e-75736e737400")  # usnst's own namespace for name-based UUIDs


def new_uid(original: str, salt: str = "") -> str:
    """The replacement for ``original``: always the same for the same UID and salt, unrelated to it otherwise. A
    UID derived from a name-based UUID (RFC 4122 version 5; root 2.25, PS3.5 B.2), so no organisation's root is
    borrowed."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, f'{salt}|{original}').int}"


def deidentify(ds: Dataset, salt: str = "") -> None:
    """Apply the profile to ``ds`` in place (nested sequences included); ``salt`` goes into every new UID."""
    ds.remove_private_tags()
    for group in range(0x6000, 0x6020, 2):  # overlays can carry burned-in text or annotations
        for element in list(ds.group_dataset(group).keys()):
            del ds[element]
    _walk(ds, salt)
    if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113100", "DCM", "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = Sequence([code])


def _walk(ds: Dataset, salt: str) -> None:
    for keyword in REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in EMPTY:
        if keyword in ds:
            element = ds[keyword]
            element.value = Sequence() if element.VR == "SQ" else None
    for keyword in DUMMY:
        if keyword in ds:
            element = ds[keyword]
            element.value = Sequence() if element.VR == "SQ" else _DUMMIES.get(element.VR, "ANONYMIZED")
    for keyword in NEW_UID:
        if keyword in ds and ds[keyword].value:
            element = ds[keyword]
            values = element.value if element.VM > 1 else [element.value]
            replaced = [new_uid(v, salt) for v in values]
            element.value = replaced if element.VM > 1 else replaced[0]
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _walk(item, salt)
